"""An ONNX folder opened in onnxruntime-genai as its users open it: `og.Model(folder)` (genai_config.json),
`og.Tokenizer(model)` (the folder's tokenizer files and chat template), greedy `og.Generator`.

onnxruntime-genai runs the graph itself (its own onnxruntime session, KV cache and search), so answers
and speed here are the client's end to end; prompts are `apply_chat_template` then `encode`, as its
examples (examples/python/model-chat.py) build them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


class GenaiSession:
    name = "onnxruntime-genai"

    def __init__(self, folder: Path, threads: int):
        import importlib.metadata

        import onnxruntime_genai as og

        self.og = og
        self.version = importlib.metadata.version("onnxruntime-genai")
        cfg = og.Config(str(folder))
        # the evaluation's thread count, as every runtime gets (a user's default is all cores)
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": int(threads)}}}}))
        self.model = og.Model(cfg)
        self.tok = og.Tokenizer(self.model)
        self.eos = set(_eos_ids(folder))
        self.tokenizer = "the folder's tokenizer.json / tokenizer_config.json (onnxruntime-extensions) and its chat template"

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tok.encode(text)]

    def piece(self, token: int) -> str:
        return self.tok.decode([token])

    def chat_ids(self, messages: list[dict]) -> list[int]:
        return self.encode(self.tok.apply_chat_template(json.dumps(messages), add_generation_prompt=True))

    def _generator(self, ids: list[int], max_length: int, min_length: int = 0):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=max_length, min_length=min_length)
        gen = self.og.Generator(self.model, params)
        gen.append_tokens(ids)
        return gen

    def answer(self, prompt: str, chat: bool, max_new_tokens: int) -> str:
        ids = self.chat_ids([{"role": "user", "content": prompt}]) if chat else self.encode(prompt)
        gen = self._generator(ids, len(ids) + max_new_tokens)
        out = []
        while not gen.is_done():
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        return self.tok.decode([t for t in out if t not in self.eos])

    def run(self, prompt_ids: list[int], n: int, timings: dict) -> list[int]:
        """n tokens through the client's generator (min_length keeps it from stopping at EOS); the prompt
        is processed by append_tokens and the first generate_next_token."""
        t0 = time.perf_counter()
        gen = self._generator(prompt_ids, len(prompt_ids) + n, len(prompt_ids) + n)
        gen.generate_next_token()
        out = [int(gen.get_next_tokens()[0])]
        t1 = time.perf_counter()
        while len(out) < n and not gen.is_done():
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        timings.update(prompt_seconds=t1 - t0, decode_seconds=time.perf_counter() - t1, decode_steps=len(out) - 1)
        return out

    def close(self) -> None:
        del self.tok, self.model


def _eos_ids(folder: Path) -> list[int]:
    eos = json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"]
    return eos if isinstance(eos, list) else [eos]


def open_session(artifact_dir: Path, record: dict, threads: int) -> GenaiSession:
    return GenaiSession(Path(artifact_dir), threads)
