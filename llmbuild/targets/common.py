"""What every target backend shares: gate settings, the metadata stamped into artifacts, progress.

Kept free of heavy imports: the planner imports this (and each backend module) to validate options,
and planning must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class Gates:
    """Quality gates against the source model; None takes the backend's default for the artifact's
    precision (each backend's `default_gates`). The figures each gate bounds are in
    llmbuild/stages/verify.py (GATES): probe-prompt verification and the evaluate stage."""

    min_top1: Optional[float] = None  # share of positions where artifact and source pick the same token
    max_kld: Optional[float] = None  # mean KL(source || artifact) per position, in nats
    max_abs_diff: Optional[float] = None  # largest absolute logit difference (probe prompts)
    max_ppl_ratio: Optional[float] = None  # artifact perplexity / source perplexity (eval.text, eval.heldout_text)
    min_acc: Optional[float] = None  # lowest multiple-choice acc of any eval.tasks entry; no default
    min_golden_em: Optional[float] = None  # golden-set exact match (eval.golden), also through the client; no default
    # share of golden prompts the artifact's client (llama.cpp, onnxruntime-genai, transformers from the
    # folder) tokenizes exactly as the source does; None: not gated, the card says how many differ and
    # where. 1.0 stops a build whose users would send the model other ids than it was evaluated on
    min_client_agreement: Optional[float] = None


@dataclass
class ArtifactMeta:
    """Facts about the model stamped into each artifact (GGUF general.*, ONNX metadata_props)."""

    name: str  # the model's name as shipped (derived names may need a license prefix)
    license_id: Optional[str] = None  # Hub license id, e.g. "apache-2.0", "llama3.1", "other"
    license_name: Optional[str] = None  # for license "other"
    license_link: Optional[str] = None
    base_model: Optional[str] = None  # Hub repo id or local name of the source model
    base_model_url: Optional[str] = None
    base_model_organization: Optional[str] = None
    quantized_by: str = "llmbuild"
    description: Optional[str] = None
    extra: dict = field(default_factory=dict)


# progress(done, total, what): called by long conversions, e.g. once per tensor
Progress = Callable[[int, int, str], None]


def no_progress(done: int, total: int, what: str) -> None:
    return None
