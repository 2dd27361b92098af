"""An HF-layout folder (the hf and trtllm targets) opened with transformers as its users open it: the
tokenizer and chat template from the folder itself (`AutoTokenizer.from_pretrained(folder)`,
`apply_chat_template`), the model through the backend's own loader and greedy decoding.

vLLM, SGLang and TensorRT-LLM load the same tokenizer files with transformers, so this is also what
they send the model (their servers render the template with transformers' jinja2 settings).
"""

from __future__ import annotations

import time
from pathlib import Path


class TransformersSession:
    name = "transformers"

    def __init__(self, backend, folder: Path, record: dict, threads: int):
        import importlib.metadata

        from transformers import AutoTokenizer

        self.backend, self.folder, self.record, self.threads = backend, folder, record, threads
        self.version = importlib.metadata.version("transformers")
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        self.tokenizer = "the folder's tokenizer files with transformers' AutoTokenizer and apply_chat_template"

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text).input_ids)

    def piece(self, token: int) -> str:
        return self.tok.convert_ids_to_tokens(token)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        out = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if hasattr(out, "keys") else out
        return [int(t) for t in ids]

    def answer(self, prompt: str, chat: bool, max_new_tokens: int) -> str:
        ids = self.chat_ids([{"role": "user", "content": prompt}]) if chat else self.encode(prompt)
        new = self.backend.generate(self.folder, self.record, ids, max_new_tokens, self.tok.eos_token_id,
                                    threads=self.threads)
        return self.tok.decode(new, skip_special_tokens=True)

    def run(self, prompt_ids: list[int], n: int, timings: dict) -> list[int]:
        t0 = time.perf_counter()
        out = self.backend.generate(self.folder, self.record, prompt_ids, n, None, threads=self.threads,
                                    timings=timings)
        timings.setdefault("prompt_seconds", time.perf_counter() - t0)
        return out

    def close(self) -> None:
        return None


def open_session(backend, artifact_dir: Path, record: dict, threads: int) -> TransformersSession:
    return TransformersSession(backend, Path(artifact_dir), record, threads)
