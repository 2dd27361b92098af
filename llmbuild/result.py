"""The typed result of a build: what every stage recorded, in the shape the reports render.

The engine fills it as the build runs and hands it to `llmbuild.report`; the reports import nothing
from the engine and ask no backend: what a backend has to say about its artifact (the card's "get
started" lines, notes, serving lines) is asked when the artifact is built and kept here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class ModelResult:
    """A checkpoint the build read: the acquired model, or the fine-tuned one every target was built from."""

    dir: Path
    digest: str  # the tree digest of its files: what downstream stage keys hold
    files: dict  # relative path -> {"sha256", "size"}
    record: dict  # the acquire record: source, architecture, num_parameters, config, repo_id, commit, seed


@dataclass
class ArtifactResult:
    """One target's artifact: how it was made, its files, and what its runtime measured."""

    target: str
    backend: str
    precision: str
    quantized: bool  # the precision quantizes (not a plain conversion): the card's relation, the license chain
    options: dict  # the recipe's options, plain (gates aside)
    export: Optional[dict] = None  # the export stage's record; None until it ran (or in a dry run)
    files: dict = field(default_factory=dict)  # artifact-relative path -> {"sha256", "size"}
    gates: Optional[dict] = None  # the gates applied: defaults for the precision, then the recipe's
    verification: Optional[dict] = None  # {"status": passed|failed|unverified, metrics, gates, ...}
    evaluation: Optional[dict] = None
    client: Optional[dict] = None  # the same figures through the client users run and its own tokenizer
    notes: list = field(default_factory=list)  # what a reader must know beyond its verification
    usage: list = field(default_factory=list)  # the card's "How to Get Started" lines (markdown)
    serving: dict = field(default_factory=dict)  # name -> serving/client lines, when the backend has them
    library: Optional[str] = None  # the Hub library_name of this kind of artifact, when there is one
    hub_repo: bool = False  # its folder is a Hub model repository (the card is written into it)


@dataclass
class BuildResult:
    """Everything the card, eval.json and the manifest are written from."""

    dir: Path
    recipe: str
    recipe_file: Optional[str]
    config: dict  # the composed recipe, resolved
    model_name: str
    source: str  # hub | local | init
    repo_id: Optional[str]
    finetune_method: str
    eval_settings: dict  # the evaluation settings, plain
    status: str = "failed"
    error: Optional[str] = None
    seconds: float = 0.0
    tools: dict = field(default_factory=dict)
    host: dict = field(default_factory=dict)
    model: Optional[ModelResult] = None  # what the targets were built from
    base_model: Optional[ModelResult] = None  # the acquired model when fine-tuning replaced it
    finetune: Optional[dict] = None  # the finetune stage's record
    finetune_dir: Optional[Path] = None  # its output folder (loss plot, adapter)
    license_decision: Any = None  # llmbuild.licenses Decision
    license_files: dict = field(default_factory=dict)  # file name -> bytes that travel with every artifact
    stages: list = field(default_factory=list)  # {"stage", "key", "status", "seconds", ...} in run order
    artifacts: list = field(default_factory=list)  # ArtifactResult, in recipe order
    warnings: list = field(default_factory=list)
    eval_source: Optional[dict] = None  # the source model's evaluation figures (evalref stage)
    contamination: Optional[dict] = None  # fine-tuning data vs evaluation sets (contamination stage), with gates
