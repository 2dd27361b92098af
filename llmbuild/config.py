"""The recipe schema (structured configs registered with Hydra) and its typed form, `BuildConfig`.

Hydra validates every composed recipe against these dataclasses: an unknown key or a wrong type
fails at composition with the key's dotted path. Target options depend on the backend, so
`targets` is a free mapping here and each target is validated against its backend's `Options`
dataclass in `typed_config`, then by the backend's recipe-only checks (`check_options`), so a bad
option value fails before any work. Nothing past `typed_config` reads raw OmegaConf nodes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from llmbuild.errors import InvalidInput
from llmbuild.finetune.config import FinetuneConfig
from llmbuild.licenses.config import LicenseConfig


class Source(Enum):
    hub = "hub"  # huggingface_hub snapshot of model.repo_id at model.revision
    local = "local"  # a checkpoint folder at model.path
    init = "init"  # a fresh model from model.architecture + model.config + model.seed


class DType(Enum):
    auto = "auto"  # as stored in the checkpoint
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


@dataclass
class TokenizerConfig:
    path: Optional[str] = None  # folder with tokenizer.model / tokenizer.json (init source)
    train_text: Optional[str] = None  # or train a SentencePiece BPE tokenizer on this text (init source)
    vocab_size: int = 512  # trained vocab size: small trains fast, large tokenizes better


@dataclass
class ModelConfig:
    source: Source = Source.init
    repo_id: Optional[str] = None  # hub: e.g. "Qwen/Qwen2.5-0.5B"
    revision: str = "main"  # hub: branch, tag or commit; resolved to a commit sha and recorded
    path: Optional[str] = None  # local: checkpoint folder (config.json + safetensors)
    architecture: str = "LlamaForCausalLM"  # init: an architecture of llmbuild/archs (archs.ARCHS)
    config: Dict[str, Any] = field(default_factory=dict)  # init: HF config keys (hidden_size, ...)
    seed: int = 0  # init: weights are a function of the seed
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    dtype: DType = DType.auto  # precision the source is loaded in for the reference logits
    trust_remote_code: bool = False  # never run code shipped with a checkpoint unless asked
    allow_pickle: bool = False  # accept PyTorch .bin weights (loaded with weights_only=True)


class McFormat(Enum):
    mmlu = "mmlu"  # {"question", "choices": [4], "answer": 0-3|A-D, "subject"?}: lm-eval's MMLU prompt, " A".." D"
    hellaswag = "hellaswag"  # {"activity_label", "ctx_a", "ctx_b", "endings", "label"}: lm-eval's HellaSwag


@dataclass
class McTask:
    name: str = "???"  # the task's name in eval.json, the card and gate figures (tasks.NAME.acc)
    path: str = "???"  # JSONL in that format: the shipped samples, or the full set when you have it
    format: McFormat = McFormat.mmlu
    limit: int = 0  # score the first N records only (0 = all): full MMLU is 14k questions


@dataclass
class HarnessConfig:
    """lm-evaluation-harness tasks, scored through every artifact's runtime and the source in torch."""

    # registry names (arc_easy, hellaswag, mmlu ...) or tasks/groups defined in include_path's YAML
    tasks: List[str] = field(default_factory=list)
    include_path: Optional[str] = None  # a folder of task YAML files (yours), searched before the registry
    limit: int = 0  # documents per task (0 = all): full sets cost minutes per artifact, a sample seconds
    num_fewshot: Optional[int] = None  # None: each task's own default (0 when it sets none); more shots, longer prompts
    # wrap prompts in the tokenizer's chat template as the harness does (true, or a template's name):
    # what an instruction-tuned model expects; false scores the raw prompt, as the harness's default
    apply_chat_template: Any = False
    fewshot_as_multiturn: bool = True  # with a chat template: each shot its own turn (harness default)
    system_instruction: Optional[str] = None  # a system prompt before every document; None adds none
    batch_size: int = 8  # sequences per runtime call (torch and onnxruntime batch them): faster, more memory
    max_length: int = 0  # tokens of context per request; 0 = the model's, at most 2048 (bounds logits memory)
    bootstrap_iters: int = 1000  # resamples for the stderr of non-mean metrics: more is steadier and slower
    # largest allowed drop of an artifact's score below the source's, per metric name (acc, exact_match,
    # word_perplexity ...; a rise for lower-is-better metrics); unset metrics are reported, not gated
    max_drop: Dict[str, float] = field(default_factory=dict)


@dataclass
class ContaminationConfig:
    """Word n-gram overlap between the fine-tuning datasets and every evaluation set."""

    enabled: bool = True  # runs when there are fine-tuning datasets and evaluation sets; costs seconds
    n: int = 13  # words per n-gram: 13 as lm-evaluation-harness and GPT-3; smaller finds more, with more chance hits
    # documents shorter than n words are checked whole (contaminated when every word appears in that
    # order in a training document) down to this length; shorter ones are too generic to judge (GPT-3's minimum 8)
    min_words: int = 8
    examples: int = 3  # contaminated documents quoted per evaluation set in the card and eval.json
    max_overlap: Optional[float] = None  # gate: largest allowed share of contaminated documents per set (exit 4)


@dataclass
class EvalConfig:
    # probe prompts for the parity check of every artifact against the source model
    probes: List[str] = field(
        default_factory=lambda: [
            "The quick brown fox jumps over the lazy dog.",
            "A build system for open-weight language models reads a recipe,",
            "Licensed under the Apache License, Version 2.0",
            "one, two, three, four, five, six",
        ]
    )
    max_tokens: int = 64  # probes are cut to this many tokens: longer checks more positions, costs time
    kv_check: bool = True  # also decode the second half token by token through the KV cache
    # The evaluate stage: every artifact through its own runtime, against the source model in torch.
    text: Optional[str] = None  # parity text: KLD (mean, p99), top-1, perplexity ratio vs the source; None skips
    heldout_text: Optional[str] = None  # held-out text for perplexity (source and each artifact); None skips
    # tokens per rolling window, second half scored (llama-perplexity): longer measures more context, costs time;
    # 0 = the context every artifact declares (the model's, or a shorter one a target declares), at most 2048
    window: int = 0
    max_windows: int = 8  # windows per text at most (0 = all): bounds time and the cached source logits
    tasks: List[McTask] = field(default_factory=list)  # multiple choice, scored as lm-evaluation-harness does
    golden: Optional[str] = None  # JSONL of {"prompt","answer"}: greedy answers through each runtime's KV cache
    golden_prompt: str = "auto"  # auto (the tokenizer's chat template when it has one) | chat | plain
    golden_max_new_tokens: int = 16  # must cover the longest answer; longer costs time on every artifact
    speed: bool = True  # when evaluating: prompt and generated tokens/s per artifact and for the torch source
    speed_prompt_tokens: int = 128  # the same prompt for every runtime (from eval.text when set)
    speed_new_tokens: int = 32  # greedy tokens generated per timed run
    speed_repeats: int = 3  # timed runs per runtime; the median is reported (shared machines are noisy)
    threads: int = 2  # CPU threads every runtime gets for generation and timing: the same for all
    harness: HarnessConfig = field(default_factory=HarnessConfig)  # lm-evaluation-harness tasks per artifact
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig)  # train/eval n-gram overlap


@dataclass
class BuildSettings:
    model_name: Optional[str] = None  # name the artifacts ship under (default: from the source)
    outputs_dir: str = "outputs"  # builds go to <outputs_dir>/<recipe>/<build-id>/
    cache_dir: Optional[str] = None  # stage cache (default: $LLMBUILD_CACHE or <outputs_dir>/.cache)
    dry_run: bool = False  # print the plan and which stages are cached, build nothing
    # what a search sweeper (hydra/sweeper=optuna) optimises: FIGURE or TARGET.FIGURE from the sweep summary
    # (size_mb, bits_per_weight, kld, top1, ppl_ratio, golden_em, gen_tok_s, prompt_tok_s); a build whose
    # gate failed scores the worst value, so gates are the search's constraints. Unused by plain builds.
    objective: Optional[str] = None


@dataclass
class BuildConfigSchema:
    recipe: str = "???"  # set by `llmbuild recipe=NAME`
    build: BuildSettings = field(default_factory=BuildSettings)
    model: ModelConfig = field(default_factory=ModelConfig)
    license: LicenseConfig = field(default_factory=LicenseConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    targets: Dict[str, Any] = field(default_factory=dict)  # name -> {backend: one of targets.BACKENDS, ...options}
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class Target:
    name: str
    backend: str
    options: Any  # the backend's Options dataclass instance

    @property
    def key(self) -> str:
        return f"targets.{self.name}"


@dataclass
class BuildConfig:
    """The typed build description every later step reads."""

    recipe: str
    build: BuildSettings
    model: ModelConfig
    license: LicenseConfig
    finetune: FinetuneConfig
    targets: list[Target]
    eval: EvalConfig
    raw: dict  # the composed config, resolved, for the manifest
    recipe_file: Optional[str] = None  # the recipe's path, for the manifest


# the project folder: shipped recipes name shipped files (data/...) relative to it
PROJECT = Path(__file__).resolve().parents[1]


def resolve_path(p: str | None) -> str | None:
    """A recipe's relative path: from where llmbuild runs if it exists there, else from the project
    folder (so the shipped recipes work from any folder). Absolute and ~ paths are taken as they are."""
    if not p:
        return p
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists() or not (PROJECT / path).exists():
        return str(path)
    return str(PROJECT / path)


def _resolve_paths(obj) -> None:
    m = obj.model
    m.path = resolve_path(m.path)
    m.tokenizer.path = resolve_path(m.tokenizer.path)
    m.tokenizer.train_text = resolve_path(m.tokenizer.train_text)
    ft = obj.finetune
    for d in getattr(ft, "datasets", None) or []:
        d.path = resolve_path(d.path)
        d.eval_path = resolve_path(d.eval_path)
    if getattr(ft, "golden", None):
        ft.golden = resolve_path(ft.golden)
    e = obj.eval
    e.text, e.heldout_text, e.golden = resolve_path(e.text), resolve_path(e.heldout_text), resolve_path(e.golden)
    for t in e.tasks:
        t.path = resolve_path(t.path)
    e.harness.include_path = resolve_path(e.harness.include_path)


def register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="llmbuild_schema", node=schema_node(BuildConfigSchema))


@functools.cache
def schema_node(schema: type) -> DictConfig:
    """OmegaConf's typed node of a schema dataclass, made once per process (11 ms for BuildConfigSchema, made
    for Hydra's ConfigStore and again to type the composed recipe). Never changed in place: ConfigStore and
    OmegaConf.merge copy it (merge deep-copies its first argument)."""
    return OmegaConf.structured(schema)


def _one_line(e: Exception) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    key = getattr(e, "full_key", None)
    return f"{key}: {msg}" if key and key not in msg else msg


# the range each gate's figure can take: a limit outside it could never pass (or never fail)
GATE_RANGES = {
    "min_top1": (0.0, 1.0),  # a share of positions
    "min_acc": (0.0, 1.0),  # a multiple-choice accuracy
    "min_golden_em": (0.0, 1.0),  # a share of golden answers
    "min_client_agreement": (0.0, 1.0),  # a share of golden prompts
    "max_kld": (0.0, math.inf),  # KL divergence is never negative
    "max_abs_diff": (0.0, math.inf),  # an absolute difference
    "max_ppl_ratio": (1.0, math.inf),  # below 1 would ask the artifact to beat its own source
}


def check_gates(gates, key: str) -> None:
    """Every gate that is set lies in its figure's range (a plan-time check: exit 2 naming the gate)."""
    if gates is None:
        return
    for name, (lo, hi) in GATE_RANGES.items():
        v = getattr(gates, name, None)
        if v is None:
            continue
        if math.isnan(v) or not lo <= v <= hi:  # inf passes for a max_* gate: no limit
            span = f"{lo:g} to {hi:g}" if hi != math.inf else f"{lo:g} or more"
            raise InvalidInput(f"{key}.{name}: {v:g} is outside the gate's range ({span})")


def typed_config(cfg: DictConfig) -> BuildConfig:
    """Turn the composed config into a BuildConfig, validating each target against its backend's
    options and recipe-only checks."""
    from llmbuild import targets as target_registry

    try:
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        raw.pop("hydra", None)
        # merge the plain values into the schema again: this also rejects keys added with `+key=`,
        # which Hydra lets into typed nodes
        typed = OmegaConf.merge(schema_node(BuildConfigSchema), raw)
        obj = OmegaConf.to_object(typed)
    except OmegaConfBaseException as e:
        raise InvalidInput(f"invalid recipe: {_one_line(e)}") from None
    _resolve_paths(obj)
    tlist = []
    for name, node in cfg.targets.items():
        key = f"targets.{name}"
        if node is None:  # `targets.NAME: null` drops a target a parent recipe declared
            continue
        if not isinstance(node, DictConfig) or "backend" not in node:
            raise InvalidInput(f"{key}.backend: every target needs a backend (one of: "
                               f"{', '.join(sorted(target_registry.BACKENDS))})")
        backend = target_registry.backend(str(node.backend), key=f"{key}.backend")
        try:
            merged = OmegaConf.merge(schema_node(backend.Options), node)
            options = OmegaConf.to_object(merged)
        except OmegaConfBaseException as e:
            fk = getattr(e, "full_key", None)
            where = f"{key}.{fk}" if fk else key
            known = ", ".join(f for f in backend.Options.__dataclass_fields__)
            raise InvalidInput(f"{where}: {str(e).splitlines()[0]} (options of backend "
                               f"{backend.name}: {known})") from None
        check_gates(getattr(options, "gates", None), f"{key}.gates")
        for opt in backend.path_options:
            setattr(options, opt, resolve_path(getattr(options, opt)))
        backend.check_options(options, key)
        tlist.append(Target(str(name), backend.name, options))
    if not tlist:
        raise InvalidInput("targets: the recipe declares no targets")
    return BuildConfig(obj.recipe, obj.build, obj.model, obj.license, obj.finetune, tlist, obj.eval, raw)
