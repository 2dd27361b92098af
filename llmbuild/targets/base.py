"""The contract of a target backend: a class whose attributes declare what it can do.

Olive's passes declare themselves the same way (a `Pass` subclass plus its row in olive_config.json:
precisions, extra dependencies). The engine, the planner, the verify and evaluate stages, the license
policy and the reports read these declarations and never name a backend; a conformance test
(tests/test_registry.py) walks every backend of the registry and every architecture x backend pair.

Each backend module defines one subclass and an instance `BACKEND`; its heavy imports (torch, onnx,
gguf, onnxruntime, llama_cpp) stay inside functions, so listing or checking targets is light. The
work itself (export, run_logits, generate) is plain functions of the module, which the class names.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class Runtime:
    """The runtime that verifies a backend's artifacts."""

    dist: str  # its distribution: the version goes into verify/evaluate keys and the card
    module: str  # the import name whose presence means it is installed
    install: str  # how to install it (the warning when it is not: artifacts are then UNVERIFIED)


@dataclass(frozen=True)
class Client:
    """The client users load a backend's artifacts with, which tokenizes and renders chat templates
    itself (llmbuild/evaluation/clients.py measures the artifact through it)."""

    dist: str  # its distribution: the version goes into the client stage's key and the card
    module: str  # the import name whose presence means it is installed
    install: str  # how to install it (the client figures are skipped, with this hint, when it is not)
    tokenizer: str  # where its tokenizer and chat template come from, for the card


class Backend:
    name: ClassVar[str]  # the `backend:` value in a recipe
    Options: ClassVar[type]  # its recipe keys (a dataclass with `backend` and `gates: Gates` fields)
    precisions: ClassVar[tuple[str, ...]]  # every precision it makes (`precision(options)` values)
    # the precisions that only convert (same or wider mantissa per value class); the others quantize
    # (the license chain's step and the card's base_model_relation)
    conversions: ClassVar[frozenset[str]] = frozenset({"fp32", "f32", "fp16", "f16", "bf16"})
    tools: ClassVar[tuple[str, ...]]  # distributions whose versions enter the export cache key
    runtime: ClassVar[Runtime]
    path_options: ClassVar[tuple[str, ...]] = ()  # options holding file paths, resolved like the recipe's own
    # why its artifacts cannot generate here (golden sets and speed are then skipped with this reason)
    no_generation: ClassVar[str | None] = None
    # why its speed is not measured although it generates (the figure would not be a deployment's)
    no_speed: ClassVar[str | None] = None
    card_library: ClassVar[str | None] = None  # the card's library_name when every artifact is this backend's
    # why its runtime cannot show which experts a mixture of experts runs per token (None: run_routing
    # reads them from the runtime, and verification reports routing agreement with the source)
    no_routing: ClassVar[str | None] = "its runtime does not expose which experts it runs"
    client: ClassVar[Client | None] = None  # the client its users run, measured through its own tokenizer
    hub_repo: ClassVar[bool] = False  # its folder is a Hub model repository: the card goes into it as README.md

    # -- plan time ------------------------------------------------------------------------------------
    def check_options(self, options, key: str) -> None:
        """Checks that need only the recipe (and this machine): run when the recipe is typed, before any
        work. Raise InvalidInput naming `key.option`."""

    def check_family(self, options, cls, key: str) -> None:
        """Checks of the options against the model's family (its Arch class, before any config is bound):
        what the backend cannot do for it, e.g. a quantization it cannot apply to experts. Run at plan
        time for an `init` model and right after acquisition for the others."""

    def check_model(self, options, arch, model_dir: Path, key: str) -> None:
        """Checks that need the model (its config.json as `arch`, its files in model_dir): run right
        after acquisition, before the license gate and any export. The architecture's support for this
        backend is checked before (plan.check_model)."""

    def precision(self, options) -> str:
        raise NotImplementedError

    def quantized(self, options) -> bool:
        return self.precision(options) not in self.conversions

    def default_gates(self, options) -> dict:
        """{gate: limit} for the artifact's precision; a recipe's gates override them one by one."""
        raise NotImplementedError

    def key_extra(self, options) -> dict:
        """What the export depends on beyond its options (input file contents, the GPU an engine is for)."""
        return {}

    def context_length(self, options, arch) -> tuple[int | None, str | None]:
        """The context the artifact declares, and why when it is shorter than the model's: every
        artifact is verified and evaluated within it."""
        return arch.context, None

    def runtime_available(self) -> bool:
        return importlib.util.find_spec(self.runtime.module) is not None

    def planned_files(self, options, model_name: str) -> list[str]:
        """The files an export will write, as a dry run shows them before it runs (once it ran, the
        cache record lists them exactly). Empty: the dry run names only the precision and runtime."""
        return []

    # -- the build ------------------------------------------------------------------------------------
    def export(self, ckpt, options, out_dir: Path, meta, progress) -> dict:
        """Write the artifact into out_dir only; returns the record every later step reads."""
        raise NotImplementedError

    def run_logits(self, artifact_dir: Path, record: dict, token_ids: list[list[int]], split: int | None = None):
        """The runtime's float32 logits [seq, vocab] per sequence; with `split`, the tokens after it go
        one at a time through the runtime's KV cache."""
        raise NotImplementedError

    def run_routing(self, artifact_dir: Path, record: dict, token_ids: list[list[int]]):
        """A mixture of experts' routing in the runtime: per sequence an int array [sparse layers, seq,
        top_k] of the experts each token runs, each row sorted (see `no_routing`)."""
        raise NotImplementedError(self.no_routing or f"the {self.name} backend has no routing function")

    def generate(self, artifact_dir: Path, record: dict, prompt_ids: list[int], max_new_tokens: int,
                 eos_id: int | None, threads: int = 2, timings: dict | None = None) -> list[int]:
        """Greedy tokens through the runtime's KV cache (golden sets, speed); see `no_generation`."""
        raise NotImplementedError(self.no_generation or f"the {self.name} backend has no generation function")

    def client_available(self) -> bool:
        return self.client is not None and importlib.util.find_spec(self.client.module) is not None

    def open_client(self, artifact_dir: Path, record: dict, threads: int):
        """The artifact opened in `client` as a user opens it: a session with the methods
        llmbuild/evaluation/clients.py lists (encode, chat_ids, answer, run, piece, close)."""
        raise NotImplementedError(f"the {self.name} backend declares no client")

    # -- documents ------------------------------------------------------------------------------------
    def usage(self, target: str, record: dict, files: list[str]) -> list[str]:
        """The card's "How to Get Started" lines (markdown) for this artifact."""
        return []

    def notes(self, record: dict) -> list[str]:
        """What a reader of the card must know about the artifact beyond its verification."""
        notes = []
        if record.get("context_note"):
            notes.append(record["context_note"])
        return notes

    def serving(self, target: str, record: dict) -> dict:
        """Client layouts and serving command lines for the artifact (name -> lines): where the
        runtimes a user deploys with are told how to load it. Empty unless the backend says."""
        return {}
