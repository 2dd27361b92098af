"""A GGUF opened in llama-cpp-python as its users open it: `Llama(model_path=...)`, the GGUF's own vocab
and chat template (the session the client evaluation and llmbuild-verify --rerun use).

Prompts are built the way `Llama.create_chat_completion` builds them (llama_cpp/llama.py and
llama_chat_format.py, 0.3.36): the GGUF's `tokenizer.chat_template` rendered by `Jinja2ChatFormatter`
with the vocab's BOS/EOS texts, then `tokenize(prompt, add_bos=False, special=True)` (the template
writes BOS itself); a GGUF without a template gets llama-cpp-python's fallback format, which the
record names. Answers come from `create_chat_completion` / `create_completion` themselves, at
temperature 0 and without llama-cpp-python's default repeat penalty of 1.1 (the evaluate stage's greedy
decoding has none), so a figure here is what a user of the client gets with greedy settings.
"""

from __future__ import annotations

import time
from pathlib import Path

GREEDY = {"temperature": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0, "seed": 0}


# the formats llama-cpp-python 0.3 picks for a GGUF whose template it recognizes, and their formatters
BUILT_IN_FORMATTERS = {"chatml": "format_chatml", "llama-3": "format_llama3",
                       "mistral-instruct": "format_mistral_instruct"}


class LlamaCppSession:
    name = "llama-cpp-python"

    def __init__(self, path: Path, n_ctx: int, threads: int):
        import importlib.metadata

        import llama_cpp

        self.version = importlib.metadata.version("llama-cpp-python")
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   verbose=False)
        meta = self.llm.metadata
        self.template = meta.get("tokenizer.chat_template")
        self.tokenizer = ("the GGUF's tokenizer.ggml.* vocab (model "
                          f"{meta.get('tokenizer.ggml.model')!r}, pre {meta.get('tokenizer.ggml.pre')!r}) and "
                          + ("its tokenizer.chat_template" if self.template else
                             f"llama-cpp-python's {self.llm.chat_format!r} chat format (the GGUF has no template)"))

    def encode(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def piece(self, token: int) -> str:
        return self.llm.detokenize([token]).decode("utf-8", errors="replace")

    def chat_ids(self, messages: list[dict]) -> list[int]:
        from llama_cpp import llama_chat_format

        fmt = self.llm.chat_format
        if fmt == "chat_template.default" and self.template:
            model = self.llm._model
            eos_id, bos_id = self.llm.token_eos(), self.llm.token_bos()
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=self.template, eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=model.token_get_text(bos_id) if bos_id != -1 else "", stop_token_ids=[eos_id])
        elif fmt in BUILT_IN_FORMATTERS:
            # a template llama-cpp-python recognizes (guess_chat_format_from_gguf_metadata) is rendered by its
            # own Python formatter, not the template: what create_chat_completion sends
            formatter = getattr(llama_chat_format, BUILT_IN_FORMATTERS[fmt])
        else:
            raise NotImplementedError(f"llama-cpp-python uses its built-in {fmt!r} format here")
        result = formatter(messages=messages)
        return list(self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True))

    def answer(self, prompt: str, chat: bool, max_new_tokens: int) -> str:
        self.llm.reset()
        if chat:
            out = self.llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=max_new_tokens,
                                                  **GREEDY)
            return out["choices"][0]["message"]["content"] or ""
        out = self.llm.create_completion(prompt, max_tokens=max_new_tokens, **GREEDY)
        return out["choices"][0]["text"]

    def run(self, prompt_ids: list[int], n: int, timings: dict) -> list[int]:
        """n tokens through the client's generation loop (`Llama.generate`, greedy), never stopping at EOS,
        timed from the call: the first token comes out of the prompt pass."""
        self.llm.reset()
        out = []
        t0 = time.perf_counter()
        t1 = t0
        for tok in self.llm.generate(prompt_ids, reset=True, **{k: GREEDY[k] for k in ("top_k", "top_p", "min_p")},
                                     temp=0.0, repeat_penalty=1.0):
            out.append(tok)
            if len(out) == 1:
                t1 = time.perf_counter()
            if len(out) >= n:
                break
        timings.update(prompt_seconds=t1 - t0, decode_seconds=time.perf_counter() - t1, decode_steps=len(out) - 1)
        return out

    def close(self) -> None:
        self.llm.close()


def open_session(artifact_dir: Path, record: dict, threads: int) -> LlamaCppSession:
    # llama.cpp's default context is the file's (context_length), which a user's Llama() also takes
    return LlamaCppSession(Path(artifact_dir) / record["file"], int(record.get("context_length") or 0), threads)
