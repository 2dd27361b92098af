"""The TensorRT-LLM target: a Hugging Face-layout checkpoint that TensorRT-LLM, vLLM and SGLang load.

Since 2026 TensorRT-LLM has no engine-build step for LLMs: `trtllm-build` and `convert_checkpoint.py`
were removed (NVIDIA/TensorRT-LLM PRs #11723, #15763 ...) and `trtllm-serve` / `LLM(...)` load a
Hugging Face folder directly, quantized ones in NVIDIA ModelOpt's *unified HF checkpoint* format
(ModelOpt `export_hf_checkpoint`, docs/source/deployment/3_unified_hf.rst). This module writes that
folder itself, tensor by tensor, so memory stays near one tensor (a row block of CHUNK_BYTES for
the large ones, FP8 linears read and quantized block by block, calibration computing a large linear
block by block; a mixture of experts' whole decoder layer while calibrating), never the model:

- `quant: none`: bf16/fp16 safetensors shards + `model.safetensors.index.json`, `config.json`,
  tokenizer files, `generation_config.json`.
- `quant: fp8`: ModelOpt `FP8` (E4M3 weights, per-tensor `weight_scale`, static per-tensor
  `input_scale` calibrated on text) or `FP8_PER_CHANNEL_PER_TOKEN` (per-output-channel
  `weight_scale`, activations quantized per token at run time, no `input_scale`).
- `quant: int4_awq`: ModelOpt `W4A16_AWQ`: symmetric group-wise int4 weights packed two per byte,
  `weight_scale` per group, AWQ smoothing scales folded into the RMSNorms feeding q/k/v and
  gate/up, and kept as `pre_quant_scale` on o_proj and down_proj, exactly where ModelOpt's export
  leaves them and TensorRT-LLM reads them.

Beside the weights: `hf_quant_config.json` (ModelOpt's legacy shape, which TensorRT-LLM treats as
authoritative), `quantization_config` in config.json (ModelOpt's flat "quant_method: modelopt"
shape), `extra_llm_api_options.yaml` (LLM-API options from the recipe) and SERVE.md with the
`trtllm-serve` and `vllm serve` command lines.

Format sources, read for this module (the comments below cite them by file):
- ModelOpt 0.47.0 `modelopt/torch/export/unified_export_hf.py` (`_export_quantized_weight`,
  `requantize_resmooth_fused_llm_layers`), `quant_utils.py` (`pack_int4_in_uint8`,
  `get_quant_config`, `fuse_prequant_layernorm`, `postprocess_state_dict`), `convert_hf_config.py`.
- TensorRT-LLM `tensorrt_llm/_torch/modules/linear.py` (`W4A16_AWQ_LinearMethod`,
  `FP8QDQLinearMethod`, `FP8RowwiseLinearMethod`), `tensorrt_llm/quantization/modelopt_config.py`,
  `tensorrt_llm/_torch/model_config.py` (`_build_modelopt_quant_config`).
- vLLM `vllm/model_executor/layers/quantization/modelopt.py` (`QUANT_ALGOS`,
  `ModelOptFp8LinearMethod`, `ModelOptFp8PcPtLinearMethod`).

Verification (`run_logits`), the most real loader that runs on a CPU, per format:
- bf16/fp16: `transformers.AutoModelForCausalLM.from_pretrained` on the folder: the real loader.
- FP8, FP8 per-channel and INT4-AWQ: transformers 5.x has no quantizer for `quant_method: modelopt`
  (its "fp8" quantizer reads DeepSeek-style `weight_scale_inv` block scales), and TensorRT-LLM and
  vLLM need CUDA. So NVIDIA ModelOpt's own quantized modules compute the model, with their state
  restored from the checkpoint (modelopt_loader.py, checked end to end against ModelOpt's own PTQ and
  export). Where nvidia-modelopt is not installed, `_hook_activations` applies the same semantics
  (following vLLM's and TensorRT-LLM's linear methods) and the record says `third_party: false`.
In every case the logits are computed in float32, so they measure the checkpoint, not CPU
half-precision kernels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.targets import modelopt_loader, trtllm_moe
from llmbuild.targets.base import Backend, Client, Runtime
from llmbuild.targets.common import ArtifactMeta, Gates, Progress, no_progress

NAME = "trtllm"
# nvidia-modelopt decides which loader verifies FP8 per-tensor checkpoints, so its version is keyed
TOOLS = ("torch", "transformers", "safetensors", "tokenizers", "nvidia-modelopt")
RUNTIME_DIST = "transformers"

DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
QUANTS = ("none", "fp8", "int4_awq")
FP8_WEIGHT_SCALES = ("per_tensor", "per_channel")
FP8_ACTIVATION_SCALES = ("calibrated", "dynamic")
# TensorRT-LLM runs W4A16_AWQ with the CUTLASS fpA_intB "finegrained" kernels
# (finegrained_mixed_dtype_gemm), which are instantiated for groups of 64 and 128 only (onnxruntime's
# copy of those kernels asserts `group_size == 64 || group_size == 128`).
AWQ_GROUP_SIZES = (64, 128)
# A calibration text shorter than this many tokens gives activation statistics from too few positions
MIN_CALIBRATION_TOKENS = 64
CALIB_SEQ_LEN = 256  # calibration sequences are cut to this length (ModelOpt's hf_ptq uses 512)

# The runtime releases this format was written for (latest on PyPI when this module was written);
# the record carries them so a user knows when to rebuild. Nothing here ran them: see bench/gpu_check.sh.
BUILT_FOR = {
    "tensorrt-llm": "1.2.1 (PyTorch backend; loads HF folders and ModelOpt unified checkpoints)",
    "vllm": "0.33.0 (quantization 'modelopt': FP8, FP8_PER_CHANNEL_PER_TOKEN; not W4A16_AWQ)",
    "nvidia-modelopt": "0.47.0 (unified HF checkpoint format: hf_quant_config.json + flat quantization_config)",
}

# Which linears are quantized, which share an input (one AWQ scale folded into the norm before them,
# as ModelOpt's export does) and which modules stay in the model dtype: the architecture's
# `linear_groups`, `linear_shapes` and `unquantized_modules` (llmbuild/archs/base.py). q/k/v biases
# need nothing: smoothing scales input columns.


@dataclass(frozen=True)
class _Layout:
    """A model's quantizable layer layout: the architecture's linear groups, and the pattern of a layer
    weight's name (layer index, module relative to the layer)."""

    groups: tuple
    pattern: object
    norm_offset: float = 0.0  # the norms compute x * (offset + w) (Gemma: 1)
    arch: object = None  # the architecture: a mixture of experts names its expert linears (expert_of)

    def __iter__(self):
        return iter(self.groups)


def _layout(arch) -> _Layout:
    return _Layout(arch.linear_groups(), arch.LAYER_WEIGHT, arch.norm_offset, arch)


# Gates per precision, logits computed in float32 from the checkpoint's values. bf16/fp16 match the
# gguf target's bf16/f16 rows (the same rounding of the weights), max_ppl_ratio included. FP8 E4M3 keeps 3 mantissa bits on
# weights *and* activations, INT4-AWQ 4 bits per weight: their KLD limits sit with llama.cpp's q8_0 and
# q4_0 rows (llama.cpp's tools/perplexity/README.md). Measured on a tiny Llama trained for 150 steps on the shipped corpus
# (tests/targets/test_trtllm.py): FP8 top-1 0.90 / KLD 0.002, FP8 per-channel 0.95 / 0.002, INT4-AWQ
# 0.92 / 0.013. Random-weight models have nearly flat next-token distributions whose top-2 gaps are
# below quantization noise, so their top-1 agreement says little (the gpu-targets recipe sets its own).
# max_ppl_ratio for FP8 sits between llama.cpp's q8_0 and q6_K rows, INT4-AWQ with Q4_K_M's (weight-only
# 4-bit): llama.cpp's Llama-3-8B ratios (q8_0 1.0008, q6_K 1.0055, q4_K_M 1.029) with room for small models.
DEFAULT_GATES = {
    "bf16": {"min_top1": 0.97, "max_kld": 5e-3, "max_abs_diff": 1.0, "max_ppl_ratio": 1.02},
    "fp16": {"min_top1": 0.98, "max_kld": 1e-3, "max_abs_diff": 0.5, "max_ppl_ratio": 1.01},
    "fp8": {"min_top1": 0.85, "max_kld": 0.02, "max_abs_diff": 2.0, "max_ppl_ratio": 1.05},
    "int4_awq": {"min_top1": 0.80, "max_kld": 0.1, "max_abs_diff": 4.0, "max_ppl_ratio": 1.25},
}

SHARD_UNIT = 1 << 20  # bytes per shard_size_mb
# large matrices are converted, FP8-quantized and (calibrating) multiplied in row blocks of about this many
# float32 bytes: smaller holds less but calls more often, and below it a BLAS may sum a block's
# products in another order than the whole matrix's (see _sliced_linear)
CHUNK_BYTES = 16 << 20
FP8_MAX = 448.0  # largest finite float8_e4m3fn; ModelOpt's FP8 maxbound
INT4_MAX = 7.0  # ModelOpt's INT4 maxbound: scale = amax / 7 (quant_utils.get_scaling_factor_from_weight)


@dataclass
class Options:
    backend: str = "trtllm"
    dtype: str = "bf16"  # bf16|fp16: unquantized tensors and run-time activations; bf16 keeps fp32's range
    quant: str = "none"  # none|fp8|int4_awq: fp8 halves bf16's weights (Hopper+), int4_awq quarters them (W4A16)
    # per_tensor: ModelOpt "FP8" (one scale per matrix + static input_scale; vLLM and TRT-LLM);
    # per_channel: "FP8_PER_CHANNEL_PER_TOKEN" (a scale per output row, finer; dynamic per-token activations)
    fp8_weight_scales: str = "per_tensor"
    # calibrated: static input_scale = amax on calibration_text / 448 (per_tensor); dynamic: per token
    # at run time (per_channel) - the format ties each weight-scale kind to one activation kind
    fp8_activation_scales: str = "calibrated"
    awq_group_size: int = 128  # 64|128: input channels per int4 scale; 64 is more accurate, 128 smaller/faster
    calibration_text: str | None = None  # text file for FP8 activation amax / AWQ scale search
    calibration_tokens: int = 512  # tokens of it used: more is steadier statistics, slower calibration
    max_batch_size: int = 64  # LLM-API max_batch_size: concurrent sequences; more needs more KV memory
    max_seq_len: int | None = None  # LLM-API max_seq_len; None: the model's max_position_embeddings
    kv_cache_free_gpu_memory_fraction: float = 0.9  # share of free GPU memory for the KV cache (TRT-LLM's default)
    shard_size_mb: int = 2000  # safetensors shard size: bounds each file, not the writer's memory
    gates: Gates = field(default_factory=Gates)


# -- plan time ----------------------------------------------------------------------------------------


def precision(options) -> str:
    return options.dtype if options.quant == "none" else options.quant


def default_gates(options) -> dict:
    return dict(DEFAULT_GATES[precision(options)])


def runtime_available() -> bool:
    return importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch") is not None


def quant_algo(options) -> str | None:
    """ModelOpt's quant_algo name for the options (None: not quantized)."""
    if options.quant == "fp8":
        return "FP8" if options.fp8_weight_scales == "per_tensor" else "FP8_PER_CHANNEL_PER_TOKEN"
    if options.quant == "int4_awq":
        return "W4A16_AWQ"
    return None


def needs_calibration(options) -> bool:
    return options.quant == "int4_awq" or (options.quant == "fp8" and options.fp8_activation_scales == "calibrated")


# bump when this writer's output changes for the same options (2: the AWQ search scores 11 alphas, not 21;
# 3: calibration runs each layer with its sliding window, as the model does)
WRITER_REVISION = 3


def key_extra(options) -> dict:
    """What the export depends on beyond the options: this writer's revision and the calibration
    text's content, not its path."""
    if not needs_calibration(options) or not options.calibration_text:
        return {"writer": WRITER_REVISION}
    p = Path(options.calibration_text)
    return {"writer": WRITER_REVISION,
            "calibration_sha256": hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None}


def check_options(options, key: str) -> None:
    """Recipe-only checks: every choice is one the format and its runtimes take, the calibration text."""
    if options.dtype not in DTYPES:
        raise InvalidInput(f"{key}.dtype: unknown dtype {options.dtype!r}; known: {', '.join(DTYPES)}")
    if options.quant not in QUANTS:
        raise InvalidInput(f"{key}.quant: unknown quant {options.quant!r}; known: {', '.join(QUANTS)}")
    if options.max_batch_size < 1:
        raise InvalidInput(f"{key}.max_batch_size: must be at least 1, got {options.max_batch_size}")
    if options.max_seq_len is not None and options.max_seq_len < 1:
        raise InvalidInput(f"{key}.max_seq_len: must be at least 1, got {options.max_seq_len}")
    if not 0 < options.kv_cache_free_gpu_memory_fraction <= 1:
        raise InvalidInput(f"{key}.kv_cache_free_gpu_memory_fraction: must be in (0, 1], got "
                           f"{options.kv_cache_free_gpu_memory_fraction}")
    if options.shard_size_mb < 1:
        raise InvalidInput(f"{key}.shard_size_mb: must be at least 1, got {options.shard_size_mb}")
    if options.quant == "fp8":
        if options.fp8_weight_scales not in FP8_WEIGHT_SCALES:
            raise InvalidInput(f"{key}.fp8_weight_scales: unknown {options.fp8_weight_scales!r}; known: "
                               f"{', '.join(FP8_WEIGHT_SCALES)}")
        if options.fp8_activation_scales not in FP8_ACTIVATION_SCALES:
            raise InvalidInput(f"{key}.fp8_activation_scales: unknown {options.fp8_activation_scales!r}; known: "
                               f"{', '.join(FP8_ACTIVATION_SCALES)}")
        # ModelOpt's formats pair them: FP8 carries a static input_scale (vLLM's ModelOptFp8LinearMethod
        # requires it), FP8_PER_CHANNEL_PER_TOKEN has none (ModelOptFp8PcPtLinearMethod: dynamic per token)
        want = "calibrated" if options.fp8_weight_scales == "per_tensor" else "dynamic"
        if options.fp8_activation_scales != want:
            raise InvalidInput(
                f"{key}.fp8_activation_scales: {options.fp8_activation_scales} with fp8_weight_scales="
                f"{options.fp8_weight_scales} is not a ModelOpt format; {options.fp8_weight_scales} weights go with "
                f"{want} activations")
    if options.quant == "int4_awq" and options.awq_group_size not in AWQ_GROUP_SIZES:
        raise InvalidInput(f"{key}.awq_group_size: {options.awq_group_size} is not one TensorRT-LLM's W4A16 kernels "
                           f"take; choose {' or '.join(map(str, AWQ_GROUP_SIZES))}")
    if needs_calibration(options):
        _check_calibration_text(options, key)


def check_model(options, arch, key: str) -> None:
    """Model checks: the quantized formats' kernels take this model's linear shapes."""
    if options.quant == "none":
        return
    shapes = arch.linear_shapes()
    if arch.mixture_of_experts:
        shapes = {**shapes, **{f"experts.N.{k}": v for k, v in arch.expert_shapes().items()}}
    if options.quant == "fp8":
        for name, (out, inp) in shapes.items():
            # FP8 GEMMs (cuBLASLt via torch._scaled_mm, CUTLASS in vLLM/TRT-LLM) need both dims % 16 == 0
            if out % 16 or inp % 16:
                raise InvalidInput(f"{key}.quant: fp8 needs linear dims that are multiples of 16 (FP8 GEMM "
                                   f"alignment); {name} is {out}x{inp}")
    if options.quant == "int4_awq":
        g = options.awq_group_size
        for name, (out, inp) in shapes.items():
            if inp % g:
                raise InvalidInput(f"{key}.awq_group_size: {name} has {inp} input features, not a multiple of "
                                   f"{g} (ModelOpt packs whole groups only)")
            if out % 2:
                raise InvalidInput(f"{key}.quant: int4_awq packs two output rows per byte; {name} has {out} rows")


def check_family(options, cls, key: str) -> None:
    """INT4-AWQ is not applied to experts (see trtllm_moe.py): bf16/fp16 and FP8 are."""
    if cls.mixture_of_experts and options.quant == "int4_awq":
        raise InvalidInput(f"{key}.quant: int4_awq is not applied to the experts of a mixture of experts "
                           f"({cls.hf_names[0]}); use quant fp8 or none")


def check(options, hf_config: dict, key: str) -> None:
    """Both kinds of checks, for a config.json (tests and tools that have no plan)."""
    from llmbuild.archs import for_config

    check_options(options, key)
    check_model(options, for_config(hf_config), key)


def _check_calibration_text(options, key: str) -> None:
    if options.calibration_tokens < MIN_CALIBRATION_TOKENS:
        raise InvalidInput(f"{key}.calibration_tokens: {options.calibration_tokens} is too few; at least "
                           f"{MIN_CALIBRATION_TOKENS}")
    if not options.calibration_text:
        raise InvalidInput(f"{key}.calibration_text: required for quant={options.quant}"
                           + (" with calibrated activation scales" if options.quant == "fp8" else "")
                           + " (a text file; data/tokenizer_corpus.txt is shipped)")
    p = Path(options.calibration_text)
    if not p.is_file():
        raise InvalidInput(f"{key}.calibration_text: {p} not found")
    try:
        words = len(p.read_text(encoding="utf-8").split())
    except UnicodeDecodeError:
        raise InvalidInput(f"{key}.calibration_text: {p} is not UTF-8 text") from None
    # every whitespace-separated word is at least one token for BPE and SentencePiece tokenizers, so
    # this many words guarantee calibration_tokens tokens without loading the tokenizer at plan time
    if words < options.calibration_tokens:
        raise InvalidInput(f"{key}.calibration_text: {p} is too short: {words} words, calibration_tokens asks for "
                           f"{options.calibration_tokens} (use a longer text or lower calibration_tokens)")


# -- export -------------------------------------------------------------------------------------------


@dataclass
class _Out:
    """One tensor of the written checkpoint."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype code
    src: str  # the checkpoint tensor it is made from
    shard: int = 0
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _ITEMSIZE[self.dtype]


_ITEMSIZE = {"F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "U8": 1, "I8": 1}
_ST_CODE = {"bfloat16": "BF16", "float16": "F16"}


def export(ckpt, options, out_dir: Path, meta: ArtifactMeta, progress: Progress = no_progress) -> dict:
    """Write the checkpoint folder into out_dir; returns the record that run_logits reads."""
    import torch

    out_dir = Path(out_dir)
    dtype = getattr(torch, DTYPES[options.dtype])
    algo = quant_algo(options)
    arch = ckpt.arch
    layout = _layout(arch)
    calib: dict = {}
    stats: dict = {}
    if algo is not None:
        n_layers = ckpt.config["num_hidden_layers"]
        if needs_calibration(options):
            batches = _calibration_batches(ckpt, options)
            calib = {"text": Path(options.calibration_text).name, "sha256": key_extra(options)["calibration_sha256"],
                     "tokens": int(batches.numel()), "sequences": int(batches.shape[0])}
            stats = _calibrate(ckpt, options, layout, batches, progress)
        else:
            stats = {i: {} for i in range(n_layers)}
    shapes = _source_shapes(ckpt)
    plan = _plan(shapes, options, layout)
    shards = _assign_shards(plan, options.shard_size_mb * SHARD_UNIT)
    conv = _Converter(options, dtype, layout, stats)
    files = _write_shards(ckpt, plan, shards, conv, out_dir, progress)
    _write_metadata(ckpt, options, out_dir, meta)
    problems = check_schema(out_dir)
    if problems:  # a bug here, not a user error: the writer and the schema disagree
        raise RuntimeError(f"trtllm export wrote a checkpoint that fails its schema: {problems[0]}")
    params = sum(math.prod(s) for n, (s, _) in shapes.items() if not arch.ignored(n))
    total = sum(o.nbytes for o in plan)
    serve = serve_commands(options, ckpt.config)
    _write_serve_files(out_dir, options, ckpt.config, meta, serve, algo)
    rec = {
        "format": "hf-safetensors" if algo is None else "modelopt-unified-hf",
        "dtype": options.dtype,
        "quant": options.quant,
        "quant_algo": algo,
        "group_size": options.awq_group_size if options.quant == "int4_awq" else None,
        "exclude_modules": list(arch.unquantized_modules) if algo else [],
        "shards": files,
        "largest_shard_bytes": max(files.values()),
        "bytes": total,
        "params": params,
        "bits_per_weight": round(total * 8 / params, 3),
        "calibration": calib or None,
        "awq_alphas": _alpha_summary(stats) if options.quant == "int4_awq" else None,
        "built_for": BUILT_FOR,
        "serve": serve,
        "engine": "not needed: trtllm-serve loads this folder (trtllm-build was removed in 2026)",
        "loader": loader_for(options),
    }
    return rec


def loader_for(options) -> dict:
    """Which code verifies this checkpoint here, and whether it is a third party's (see module doc)."""
    algo = quant_algo(options)
    if algo is None:
        return {"name": "transformers.AutoModelForCausalLM.from_pretrained", "third_party": True}
    if modelopt_loader.available():
        return {"name": modelopt_loader.describe(), "third_party": True,
                "not_run": "TensorRT-LLM's and vLLM's CUDA kernels (bench/gpu_check.sh, on a GPU)"}
    follows = ("vLLM modelopt.py ModelOptFp8PcPtLinearMethod" if algo == "FP8_PER_CHANNEL_PER_TOKEN" else
               "TensorRT-LLM _torch/modules/linear.py W4A16_AWQ_LinearMethod" if algo == "W4A16_AWQ" else
               "vLLM modelopt.py ModelOptFp8LinearMethod")
    return {"name": f"llmbuild's own dequantizing reader (follows {follows})", "third_party": False,
            "warning": "NOT a third-party loader: nvidia-modelopt is not installed here "
                       "(pip install 'llmbuild[modelopt]'), and TensorRT-LLM and vLLM need CUDA"}


def _source_shapes(ckpt) -> dict[str, tuple[tuple[int, ...], str]]:
    if ckpt.pickle:
        return {n: (tuple(t.shape), str(t.dtype)) for n, t in ckpt.iter_tensors()}
    return {n: (tuple(s), d) for n, (s, d) in ckpt.tensor_shapes().items()}


def _linear_of(name: str, layout) -> tuple[int, str, int, object] | None:
    """(layer, linear, index in group, group) when `name` is the weight of a quantized linear."""
    m = layout.pattern.match(name)
    if not m:
        return None
    for g in layout:
        if m.group(2) in g.linears:
            return int(m.group(1)), m.group(2), g.linears.index(m.group(2)), g
    hit = layout.arch.expert_of(name) if layout.arch is not None and layout.arch.mixture_of_experts else None
    if hit:  # an expert's gate, up or down (trtllm_moe.py)
        return hit[0], m.group(2), hit[2], trtllm_moe.EXPERT_GROUP
    return None


def _norm_of(name: str, layout) -> tuple[int, object] | None:
    m = layout.pattern.match(name)
    if not m:
        return None
    for g in layout:
        if g.norm == m.group(2):
            return int(m.group(1)), g
    return None


def _plan(shapes: dict, options, layout) -> list[_Out]:
    """Every tensor of the output, grouped by the source tensor it comes from (no weights read)."""
    algo = quant_algo(options)
    dt = _ST_CODE[DTYPES[options.dtype]]
    plan = []
    for src, (shape, _) in sorted(shapes.items()):
        if src.endswith(".rotary_emb.inv_freq"):  # buffers every runtime recomputes from the config
            continue
        lin = _linear_of(src, layout) if algo else None
        if lin is None:
            plan.append(_Out(src, tuple(shape), dt, src))
            continue
        out, inp = shape
        mod = src[: -len(".weight")]
        if algo == "W4A16_AWQ":
            g = options.awq_group_size
            # quant_utils.pack_int4_in_uint8: (out/2, in) uint8; get_weight_scaling_factor: (out, in/g)
            plan += [_Out(src, (out // 2, inp), "U8", src), _Out(f"{mod}.weight_scale", (out, inp // g), "F32", src)]
            if lin[3].norm is None:
                # unfused linears keep pre_quant_scale in the model dtype (postprocess_state_dict renames
                # input_quantizer._pre_quant_scale; TRT-LLM's W4A8 loader asserts it has module.dtype)
                plan.append(_Out(f"{mod}.pre_quant_scale", (inp,), dt, src))
        else:
            # _export_quantized_weight: float8_e4m3fn weight; float32 scales, 0-d when per tensor
            wshape = () if algo == "FP8" else (out,)
            plan += [_Out(src, (out, inp), "F8_E4M3", src), _Out(f"{mod}.weight_scale", wshape, "F32", src)]
            if algo == "FP8":
                plan.append(_Out(f"{mod}.input_scale", (), "F32", src))
    return plan


def _assign_shards(plan: list[_Out], shard_bytes: int) -> list[list[_Out]]:
    """Cut the plan into shards of at most shard_bytes (a larger single tensor gets its own shard),
    keeping a linear's weight and scales together; offsets inside a shard follow safetensors' own
    serializer (larger item sizes first, then by name) so every tensor stays aligned."""
    groups: list[list[_Out]] = []
    for o in plan:
        if groups and groups[-1][0].src == o.src:
            groups[-1].append(o)
        else:
            groups.append([o])
    shards: list[list[_Out]] = [[]]
    size = 0
    for grp in groups:
        n = sum(o.nbytes for o in grp)
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].extend(grp)
        size += n
    for i, shard in enumerate(shards):
        off = 0
        for o in sorted(shard, key=lambda o: (-_ITEMSIZE[o.dtype], o.name)):
            o.shard, o.offset = i, off
            off += o.nbytes
    return shards


class _Converter:
    """Source tensor -> the output tensors made from it (name -> tensor), one source at a time."""

    def __init__(self, options, dtype, layout, stats):
        self.options, self.dtype, self.layout, self.stats = options, dtype, layout, stats
        self.algo = quant_algo(options)

    def plain(self, src: str) -> bool:
        """True when src is copied as is, only cast to the checkpoint dtype."""
        if not self.algo:
            return True
        return _linear_of(src, self.layout) is None and (
            self.algo != "W4A16_AWQ" or _norm_of(src, self.layout) is None)

    def __call__(self, src: str, x) -> dict:
        import torch

        lin = _linear_of(src, self.layout) if self.algo else None
        if lin is None:
            norm = _norm_of(src, self.layout) if self.algo == "W4A16_AWQ" else None
            if norm is not None:
                layer, g = norm
                # fuse_prequant_layernorm: norm.weight * pre_quant_scale (= 1 / smoothing scale); a norm
                # computing x * (offset + w) stores (offset + w) / scale - offset
                off = self.layout.norm_offset
                x = (x.float() + off) / self.stats[layer][g.linears[0]]["scale"] - off
            return {src: x.to(self.dtype).contiguous()}
        layer, name, proj, group = lin
        w = x.float()
        mod = src[: -len(".weight")]
        if group == trtllm_moe.EXPERT_GROUP:
            made = trtllm_moe.convert(self.algo, proj, self.layout.arch.expert_of(src)[1], w,
                                      self.stats[layer].get("experts", {}))
            return {(f"{mod}.{k}" if k else src): v for k, v in made.items()}
        st = self.stats[layer].get(name, {})
        if self.algo == "W4A16_AWQ":
            s = st["scale"]
            out = {}
            if group.norm is None:
                pqs = (1.0 / s).to(self.dtype)
                out[f"{mod}.pre_quant_scale"] = pqs
                s = 1.0 / pqs.float()  # the weight absorbs exactly what the stored (rounded) scale undoes
            packed, scale = quantize_int4(w * s, self.options.awq_group_size)
            out[src], out[f"{mod}.weight_scale"] = packed, scale
            return out
        # FP8 from the tensor in memory (a pickled checkpoint, or a dtype the numpy reader does not
        # return): the same row-block arithmetic as the streamed writer's, into one E4M3 tensor
        q = torch.empty(w.shape, dtype=torch.float8_e4m3fn)
        scales = self.fp8(src, tuple(w.shape), lambda a, b: w[a:b].clone(), lambda a, blk: q[a: a + len(blk)].copy_(blk))
        return {src: q, **scales}

    def streams(self, src: str) -> bool:
        """True when src is a dense linear quantized to FP8: `fp8` can read and write it in row blocks."""
        lin = _linear_of(src, self.layout) if self.algo in ("FP8", "FP8_PER_CHANNEL_PER_TOKEN") else None
        return lin is not None and lin[3] != trtllm_moe.EXPERT_GROUP

    def fp8(self, src: str, shape: tuple[int, int], read, write) -> dict:
        """A linear's FP8 weight a row block at a time: read(a, b) gives rows [a, b) in float32 as a buffer
        this may overwrite, write(a, q) takes their E4M3 values. Returns its scales by output name.

        Elementwise once the scale is known, so the bytes are those of whole-tensor arithmetic whatever
        the blocks. The per-tensor scale is the amax of the whole matrix, so per tensor the blocks are
        read twice (amax first, then quantized): a read from the page cache costs less than holding a
        large linear's float32 weights, which was this export's peak."""
        import torch

        layer, name = _linear_of(src, self.layout)[:2]
        mod = src[: -len(".weight")]
        blocks = _row_blocks(*shape)
        if self.algo == "FP8":
            amax_w = max(float(read(a, b).abs().max()) for a, b in blocks)
            scale = torch.tensor(max(amax_w, 1e-12) / FP8_MAX)
            for a, b in blocks:
                write(a, read(a, b).div_(scale).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn))
            amax = self.stats[layer].get(name, {}).get("amax", 0.0)
            # a linear whose input was all zeros on the calibration text still needs a usable scale
            iscale = torch.tensor(amax / FP8_MAX if amax > 0 else 1.0, dtype=torch.float32)
            return {f"{mod}.weight_scale": scale.float(), f"{mod}.input_scale": iscale}
        parts = []
        for a, b in blocks:
            blk = read(a, b)
            s = (blk.abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX).float()
            write(a, blk.div_(s[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn))
            parts.append(s)
        return {f"{mod}.weight_scale": torch.cat(parts)}


def _row_blocks(rows: int, cols: int) -> list[tuple[int, int]]:
    """[a, b) row ranges of at most about CHUNK_BYTES of float32 each, as even as whole rows allow (no
    small remainder block)."""
    n = max(1, math.ceil(rows * cols * 4 / CHUNK_BYTES))
    step = math.ceil(rows / n)
    return [(a, min(a + step, rows)) for a in range(0, rows, step)]


def quantize_int4(w, group: int):
    """ModelOpt INT4_AWQ weight export: symmetric per-group scale amax/7 (zero amax -> 1, as
    get_scaling_factor_from_weight), values round(w/scale) clamped to [-8, 7], packed by
    quant_utils.pack_int4_in_uint8: byte[j, i] = q[2j, i] & 0xF | (q[2j+1, i] & 0xF) << 4, shape (out/2, in)."""
    import torch

    out, inp = w.shape
    amax = w.reshape(out, inp // group, group).abs().amax(dim=-1)
    scale = amax / INT4_MAX
    scale[scale == 0] = 1.0
    q = (w / scale.repeat_interleave(group, dim=1)).round().clamp(-8, 7).to(torch.int8)
    pairs = q.reshape(out // 2, 2, inp)
    packed = (pairs[:, 0] & 0x0F) | ((pairs[:, 1] & 0x0F) << 4)
    return packed.to(torch.uint8).contiguous(), scale.float().contiguous()


def dequantize_int4(packed, scale, group: int):
    """The inverse of quantize_int4, as TensorRT-LLM's W4A16 GEMM computes it (has_zero_point false):
    w[o, i] = int4(o, i) * weight_scale[o, i // group]."""
    import torch

    p = packed.to(torch.int16)
    lo = ((p & 0x0F) ^ 8) - 8  # sign-extend the low nibble: rows 2j
    hi = (((p >> 4) & 0x0F) ^ 8) - 8  # high nibble: rows 2j+1
    q = torch.stack([lo, hi], dim=1).reshape(packed.shape[0] * 2, packed.shape[1]).float()
    return q * scale.float().repeat_interleave(group, dim=1)


def fake_quantize_int4(w, group: int):
    """dequantize_int4(*quantize_int4(w, group), group), bit for bit, without packing: what the AWQ
    search scores each candidate with (packing and unpacking were a third of its time)."""
    out, inp = w.shape
    g = w.reshape(out, inp // group, group)
    scale = g.abs().amax(dim=-1, keepdim=True) / INT4_MAX
    scale[scale == 0] = 1.0
    return ((g / scale).round().clamp(-8, 7) * scale).reshape(out, inp)


def _tensor_bytes(t) -> memoryview:
    import torch

    t = t.contiguous().reshape(-1)
    if t.dtype == torch.bfloat16 or t.dtype == torch.float8_e4m3fn:
        t = t.view(torch.uint8)  # numpy has neither dtype; the bytes are what safetensors stores
    return memoryview(t.numpy()).cast("B")


def _write_shards(ckpt, plan, shards, conv, out_dir: Path, progress) -> dict[str, int]:
    """Stream every shard: header first (all shapes are known from the plan), then each tensor written
    at its offset as soon as it is made. safetensors.torch.save_file would need the whole shard in
    memory (and copies each tensor to bytes), which is what makes converters run out of memory."""
    n = len(shards)
    names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    by_src: dict[str, list[_Out]] = {}
    for o in plan:
        by_src.setdefault(o.src, []).append(o)
    handles, data_start = [], []
    source = _Source(ckpt)
    try:
        for i, shard in enumerate(shards):
            header = {o.name: {"dtype": o.dtype, "shape": list(o.shape), "data_offsets": [o.offset, o.offset + o.nbytes]}
                      for o in shard}
            header["__metadata__"] = {"format": "pt"}
            blob = json.dumps(header, separators=(",", ":")).encode()
            blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as safetensors writes it
            f = open(out_dir / names[i], "wb")  # noqa: SIM115  (all shards stay open; closed in finally)
            handles.append(f)
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(8 + len(blob) + sum(o.nbytes for o in shard))
            data_start.append(8 + len(blob))
        done = 0
        for src, outs in by_src.items():
            if len(outs) == 1 and outs[0].name == src and conv.plain(src) and not ckpt.pickle \
                    and len(outs[0].shape) == 2 and outs[0].nbytes > CHUNK_BYTES:
                # a large unquantized matrix (embedding, lm_head): converted in row blocks read with
                # safetensors slices, so memory holds a block, not a vocabulary-sized tensor
                _copy_rows(ckpt, src, outs[0], conv.dtype, handles[outs[0].shard], data_start[outs[0].shard])
                done += 1
                progress(done, len(by_src), src)
                continue
            if conv.streams(src) and source.readable(src):
                # an FP8 linear: read, quantized and written in row blocks, so memory holds a block of it
                w = next(o for o in outs if o.name == src)
                f, at = handles[w.shard], data_start[w.shard] + w.offset

                def put(a, q, f=f, at=at, cols=w.shape[1]):
                    f.seek(at + a * cols)  # E4M3: one byte per value
                    f.write(_tensor_bytes(q))

                made = conv.fp8(src, w.shape, lambda a, b, src=src: source.rows(src, a, b), put)
                outs = [o for o in outs if o is not w]
            else:
                made = conv(src, source(src))
            for o in outs:
                t = made.pop(o.name)
                buf = _tensor_bytes(t)
                if len(buf) != o.nbytes or tuple(t.shape) != o.shape:
                    raise RuntimeError(f"{o.name}: made {tuple(t.shape)} ({len(buf)} bytes), planned {o.shape}")
                handles[o.shard].seek(data_start[o.shard] + o.offset)
                handles[o.shard].write(buf)
            del made
            _trim_heap()  # see _trim_heap: without it freed tensors pile up in glibc's heap
            done += 1
            progress(done, len(by_src), src)
    finally:
        for f in handles:
            f.close()
    index = {"metadata": {"total_size": sum(o.nbytes for o in plan)},
             "weight_map": {o.name: names[o.shard] for o in sorted(plan, key=lambda o: o.name)}}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return {names[i]: (out_dir / names[i]).stat().st_size for i in range(n)}


def _copy_rows(ckpt, src: str, o: _Out, dtype, f, start: int) -> None:
    from safetensors import safe_open

    rows, cols = o.shape
    step = max(1, CHUNK_BYTES // (cols * 4))
    row_bytes = cols * _ITEMSIZE[o.dtype]
    for a in range(0, rows, step):
        # a fresh mapping per block: pages read for one block leave the resident set when it closes
        with safe_open(str(ckpt.index[src]), framework="pt") as st:
            block = st.get_slice(src)[a: a + step].to(dtype).contiguous()
        f.seek(start + o.offset + a * row_bytes)
        f.write(_tensor_bytes(block))
        del block
    _trim_heap()


class _Source:
    """Checkpoint tensors by name, one at a time. safetensors: `get_tensor` maps the file per call, so
    pages read for one tensor leave the resident set with it. Pickled .bin files: torch loads a whole
    file anyway, so one file's state dict is kept while its tensors are asked for."""

    def __init__(self, ckpt):
        self.ckpt, self.file, self.state = ckpt, None, {}
        self.reader = None
        if not ckpt.pickle:
            from llmbuild.targets import safetensors_np

            self.reader = safetensors_np.Reader(ckpt.index)

    def readable(self, name: str) -> bool:
        """True when `rows` reads this tensor (safetensors, a dtype the numpy reader returns)."""
        return self.reader is not None and self.reader.readable(name)

    def rows(self, name: str, first: int, stop: int):
        """Rows [first, stop) of a tensor in float32 (exact for bf16/fp16), read with file reads into a
        buffer of their own (safetensors_np), not mapped: no file pages stay resident beside it."""
        import torch

        from llmbuild.targets import safetensors_np

        try:
            block = safetensors_np.widen(self.reader.rows(name, first, stop))
        except (OSError, ValueError) as e:  # a file changed or truncated since its header was read
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InvalidInput(f"{self.ckpt.index[name]}: tensor {name} cannot be read ({msg})") from None
        return torch.from_numpy(block).float()

    def __call__(self, name: str):
        if not self.ckpt.pickle:
            return self.ckpt.get_tensor(name)
        import torch

        f = self.ckpt.index[name]
        if f != self.file:
            self.state = {}  # drop the previous file before loading the next
            self.state, self.file = torch.load(f, map_location="cpu", weights_only=True), f
        return self.state[name]


# -- calibration --------------------------------------------------------------------------------------


def _calibration_batches(ckpt, options):
    """The first calibration_tokens tokens of the text, as [sequences, CALIB_SEQ_LEN] token ids."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt.dir))
    ids = tok(Path(options.calibration_text).read_text(encoding="utf-8")).input_ids
    n = options.calibration_tokens
    if len(ids) < n:
        raise InvalidInput(f"calibration_text: {options.calibration_text} gives {len(ids)} tokens, calibration_tokens "
                           f"asks for {n}")
    seq = min(CALIB_SEQ_LEN, n, ckpt.config.get("max_position_embeddings") or CALIB_SEQ_LEN)
    rows = n // seq
    return torch.tensor(ids[: rows * seq]).reshape(rows, seq)


def _calibrate(ckpt, options, layout, batches, progress, stream: bool = True) -> dict:
    """Run the source model one decoder layer at a time on the calibration tokens and derive, per
    linear, what the format needs: the input amax (FP8 input_scale) or the AWQ smoothing scale.

    Layer by layer, as llm-awq's run_awq and ModelOpt's sequential calibration do, so calibrating does
    not need the model's size in RAM. Inputs to each layer come from the unquantized model, as in
    ModelOpt's awq_lite (its search forward returns the unquantized output).

    Within a dense layer the weights stream too (`_streamed_forward`): each module holding parameters
    reads its own from the checkpoint, in float32, just before its forward and lets them go just after,
    so one module's weights are resident at a time, not the layer's (on bench/scale_memory.py's 1B
    model a float32 decoder layer is 187 MB, its largest linear 48 MB); a linear over CHUNK_BYTES
    computes its output by row blocks of its weight (`_sliced_linear`), so a block of it is resident.
    The values are those of the whole layer's and, as measured, so are the sums (see _sliced_linear):
    the statistics are identical (tests/targets/test_trtllm_calibration.py). FP8 keeps each input's
    amax only, not the input. A layer that reads a parameter outside its owner's forward fails on
    the streamed one's empty placeholder and runs again with the whole layer loaded (`_load_layer`),
    as do mixtures of experts (their fused experts are built from per-expert tensors), and every layer
    with stream=False (the whole-layer reference the tests compare with)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(ckpt.dir))
    with torch.device("meta"):
        skeleton = _skeleton(AutoModelForCausalLM, cfg)
    inner = skeleton.model
    hidden = _embed(ckpt, batches, f"{ckpt.arch.EMBED}.weight")
    if ckpt.arch.embedding_scale:  # Gemma: the embedding module multiplies by sqrt(hidden)
        hidden = hidden * ckpt.arch.embedding_scale
    rotary = type(inner.rotary_emb)(config=skeleton.config)
    pos = torch.arange(batches.shape[1])[None].expand(batches.shape[0], -1)
    pe_of, mask_of = _layer_inputs(ckpt.arch, cfg, rotary, hidden, pos)
    n_layers = cfg.num_hidden_layers
    source = _Source(ckpt)
    arch = ckpt.arch
    stats: dict = {}
    for i in range(n_layers):
        layer = inner.layers[i]
        captured: dict[str, object] = {}
        hooks = []
        if arch.mixture_of_experts:  # the experts' input and the router's choice, for trtllm_moe.expert_stats
            hooks.append(layer.get_submodule(arch.EXPERTS_MODULE).register_forward_pre_hook(
                lambda m, a, store=captured: store.__setitem__("experts", (a[0].detach(), a[1].detach()))))
        for g in layout:
            # linears of a group read the same tensor: capture it once, at the first. FP8 needs its amax
            # alone, taken at once (the inputs are not kept to the layer's end); AWQ searches on the input
            mod = layer.get_submodule(g.linears[0])
            hooks.append(mod.register_forward_pre_hook(
                lambda m, a, key=g.linears[0], store=captured: store.__setitem__(
                    key, float(a[0].abs().max()) if options.quant == "fp8"
                    else a[0].reshape(-1, a[0].shape[-1]).detach())))

        def forward(layer, x=hidden, i=i):
            with torch.no_grad():
                return layer(x, position_embeddings=pe_of(i), position_ids=pos, attention_mask=mask_of(i))

        out = None
        if stream and not arch.mixture_of_experts:
            try:
                out = _streamed_forward(layer, source, f"model.layers.{i}.", forward)
            except RuntimeError:
                # a parameter read outside its owner's forward met its empty placeholder: load the layer
                captured.clear()
        if out is None:
            layer = _load_layer(layer, arch, i, source, ckpt)
            out = forward(layer)
        hidden = out
        for h in hooks:
            h.remove()
        stats[i] = {}
        if "experts" in captured:
            stats[i]["experts"] = trtllm_moe.expert_stats(layer, arch, i, *captured.pop("experts"))
        for g in layout:
            x = captured[g.linears[0]]
            if options.quant == "fp8":
                amax = x  # the hook kept the input's amax alone
                for name in g.linears:
                    stats[i][name] = {"amax": amax}
            else:
                # from the checkpoint, one group at a time: the streamed layer holds no weights now
                ws = [source(f"model.layers.{i}.{n}.weight").float() for n in g.linears]
                scale, alpha, loss = awq_search(x, ws, options.awq_group_size)
                del ws
                for name in g.linears:
                    stats[i][name] = {"scale": scale, "alpha": alpha, "loss": loss}
        inner.layers[i] = layer.to("meta")
        del captured, layer, out
        _trim_heap()
        progress(i + 1, n_layers, f"calibrating layer {i}")
    return stats


def _load_layer(layer, arch, i: int, source, ckpt):
    """Decoder layer i on the CPU in float32 with all its weights from the checkpoint."""
    import torch

    layer = layer.to_empty(device="cpu")
    if arch.mixture_of_experts:  # fused experts in transformers 5: built from the per-expert tensors
        state = {k: v.float() for k, v in arch.hf_layer_state(i, source, ckpt.index).items()}
        layer.load_state_dict(state)
        del state
    else:
        # tensor by tensor into the layer's own float32 storage (copy_ casts): a float32 state dict
        # beside the layer would hold the layer twice
        with torch.no_grad():
            for k, t in layer.state_dict(keep_vars=True).items():
                t.copy_(source(f"model.layers.{i}.{k}"))
    return layer


def _streamed_forward(layer, source, prefix: str, forward):
    """forward(layer) with each module's own parameters read from the checkpoint (prefix + name) by a
    forward pre-hook, cast to the skeleton's dtype as _load_layer's copy_ does, and dropped by a forward
    hook. Between its forwards a module holds empty placeholders, so a parameter read anywhere else
    raises (a shape mismatch) rather than computing with absent values; the caller then loads the layer.
    Returns the layer's output; the layer is left on the meta device, as it came."""
    import torch

    def placeholder(p):
        return torch.nn.Parameter(torch.empty(0, dtype=p.dtype), requires_grad=False)

    hooks, kept, sliced = [], [], []
    try:
        for name, mod in layer.named_modules():
            own = {n: p.dtype for n, p in mod.named_parameters(recurse=False)}
            if not own:
                continue
            for n in own:
                kept.append((mod, n, mod._parameters[n]))
                mod._parameters[n] = placeholder(mod._parameters[n])
            key = f"{prefix}{name}." if name else prefix
            if _sliceable(mod, source, key):
                # its own forward, by row blocks of the weight: never the whole weight resident
                mod.forward = _sliced_linear(mod, source, key, own["weight"])
                sliced.append(mod)
                continue

            def load(m, args, own=own, key=key):
                for n, dtype in own.items():
                    m._parameters[n] = torch.nn.Parameter(source(key + n).to(dtype), requires_grad=False)

            def drop(m, args, output, own=own):
                for n in own:
                    m._parameters[n] = placeholder(m._parameters[n])
                _trim_heap()  # a linear's weights, once freed, would stay in glibc's heap beside the next's

            hooks += [mod.register_forward_pre_hook(load), mod.register_forward_hook(drop)]
        return forward(layer)
    finally:
        for h in hooks:
            h.remove()
        for mod in sliced:
            del mod.forward  # the class's forward again
        for mod, n, p in kept:  # the skeleton's meta parameters back, with their shapes
            mod._parameters[n] = p


def _sliceable(mod, source, key: str) -> bool:
    """A plain nn.Linear (a subclass may compute otherwise) whose float32 weight is over CHUNK_BYTES,
    read from a file `source.rows` reads. Smaller ones load whole, as the model's own forward has them."""
    import torch

    return (type(mod) is torch.nn.Linear and mod.in_features * mod.out_features * 4 > CHUNK_BYTES
            and source.readable(key + "weight") and (mod.bias is None or source.readable(key + "bias")))


def _sliced_linear(mod, source, key: str, dtype):
    """nn.Linear's forward, F.linear(x, weight, bias), computed by output-row blocks of the weight read
    from the checkpoint: y[..., a:b] = F.linear(x, weight[a:b], bias[a:b]), one block resident at a time.

    Each output element is the same dot product, but whether the BLAS sums it in the same order for a
    block as for the whole matrix is its choice, not a documented guarantee. Measured with MKL (torch's
    CPU BLAS on x86), 512 calibration tokens: 16 MB blocks give the whole matrix's bits on every linear
    of bench/make_models.py's mid and 1b models with 1, 2 or 4 threads, and on Llama-3-8B's shapes
    (4096x4096, 14336x4096, 4096x14336) with 2; smaller blocks may not (1b's down_proj, 2048x5888,
    in 4 MB blocks of 171 rows differs in the last bit with 1 or 4 threads, in 8 MB blocks with 4).
    tests/targets/test_trtllm_calibration.py holds the statistics to the whole layer's."""
    import torch

    out_f, in_f = mod.out_features, mod.in_features
    has_bias = mod.bias is not None

    def forward(x):
        y = x.new_empty((*x.shape[:-1], out_f))
        for a, b in _row_blocks(out_f, in_f):
            w = source.rows(key + "weight", a, b).to(dtype)
            bias = source.rows(key + "bias", a, b).to(dtype) if has_bias else None
            y[..., a:b] = torch.nn.functional.linear(x, w, bias)
            del w, bias
        _trim_heap()
        return y

    return forward


def _skeleton(auto, cfg):
    """The model class on the meta device, with SDPA attention where the family has it (eager where it
    does not: Gemma 2's soft-capping)."""
    import torch

    try:
        return auto.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    except ValueError:
        return auto.from_config(cfg, attn_implementation="eager", dtype=torch.float32)


def _layer_inputs(arch, cfg, rotary, hidden, pos):
    """What a decoder layer takes besides its input, as the model's forward makes it: the rotary cos/sin
    (per layer type where the family has two ropes, Gemma 3), and an additive causal mask with the
    layer's sliding window (explicit: eager attention has no causal default)."""
    import inspect

    import torch

    types = getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers
    with torch.no_grad():
        if "layer_type" in inspect.signature(rotary.forward).parameters:
            pe = {t: rotary(hidden, pos, t) for t in set(types)}
        else:
            pe = dict.fromkeys(set(types), rotary(hidden, pos))
    n = pos.shape[1]
    q, k = torch.arange(n)[:, None], torch.arange(n)[None]
    masks = {}
    for w in set(arch.windows):
        visible = (k <= q) & ((k > q - w) if w else True)
        masks[w] = torch.where(visible, 0.0, torch.finfo(torch.float32).min)[None, None]
    return (lambda i: pe[types[i]]), (lambda i: masks[arch.windows[i]])


def _trim_heap() -> None:
    """Give freed memory back to the OS. glibc raises its mmap threshold to the size of each large
    block freed (up to 32 MiB), so a layer's weights, once freed, stay in the heap and the next
    layer's land beside them: measured on the bench's mid model, RSS grew by 32 MiB per layer without
    this, to the model's size. malloc_trim(0) returns those free pages; elsewhere this is a no-op."""
    import ctypes
    import ctypes.util

    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    if _LIBC and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


_LIBC = None


def _embed(ckpt, batches, name: str):
    """Embedding rows of the calibration tokens only, read with safetensors slices: a 128k-token
    embedding never has to be in memory for a calibration pass."""
    import torch

    uniq = sorted(set(batches.reshape(-1).tolist()))
    if ckpt.pickle:
        rows = ckpt.get_tensor(name)[uniq].float()
    else:
        from safetensors import safe_open

        with safe_open(str(ckpt.index[name]), framework="pt") as st:
            sl = st.get_slice(name)
            rows = torch.stack([sl[i: i + 1][0] for i in uniq]).float()
    where = {t: j for j, t in enumerate(uniq)}
    return rows[torch.tensor([[where[t] for t in row] for row in batches.tolist()])]


def awq_search(x, weights, group: int, grid: int = 10):
    """AWQ's per-input-channel smoothing scale for linears reading the input x [tokens, in].

    The scale is llm-awq's (mit-han-lab/llm-awq awq/quantize/auto_scale.py `_search_module_scale`):
    s = mean|x|^alpha per input channel, normalised by sqrt(max(s) * min(s)), alpha on the grid
    0, 1/grid, ..., 1 (alpha = 0 is plain round-to-nearest, so the search never does worse on the
    calibration data). grid 10 is ModelOpt awq_lite's alpha_step 0.1; llm-awq uses 20, twice the
    candidates, which gained nothing on the bench's mid model (held-out KLD 5.70e-2 with 20, 5.59e-2
    with 10: bench/trtllm_vs_modelopt.py --modes awq). Each candidate is scored, as ModelOpt's
    awq_lite does (model_calib.py `update_loss`), by the mean squared error between the float
    output x @ W.T and the output of the group-quantized smoothed weight on the smoothed input,
    (x / s) @ Q(W * s).T. Linears that
    share the input (q/k/v, gate/up) are searched jointly on their concatenated outputs, so one scale
    can be folded into the norm before them. Returns (scale, alpha, loss)."""
    import torch

    w = torch.cat([t.float() for t in weights])
    x = x.float()
    x_mean = x.abs().mean(dim=0)
    ref = x @ w.T
    best = (None, None, float("inf"))
    for k in range(grid + 1):
        alpha = k / grid
        s = x_mean.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        loss = float(((x / s) @ fake_quantize_int4(w * s, group).T - ref).pow(2).mean())
        if loss < best[2]:
            best = (s, alpha, loss)
    return best


def _alpha_summary(stats: dict) -> dict:
    alphas = [v["alpha"] for layer in stats.values() for v in layer.values()]
    return {"min": min(alphas), "max": max(alphas), "mean": round(sum(alphas) / len(alphas), 4)} if alphas else {}


# -- metadata and serving files ----------------------------------------------------------------------


def hf_quant_config(options, arch) -> dict | None:
    """hf_quant_config.json: ModelOpt's legacy shape (quant_utils.get_quant_config), which TensorRT-LLM
    reads as authoritative (model_config.load_modelopt_quant_config) and vLLM lists in
    get_config_filenames. The producer is named honestly: llmbuild wrote it, in ModelOpt's format."""
    from llmbuild import __version__

    algo = quant_algo(options)
    if algo is None:
        return None
    q = {"quant_algo": algo, "kv_cache_quant_algo": None, "exclude_modules": list(arch.unquantized_modules)}
    if algo == "W4A16_AWQ":
        # process_layer_quant_config's int4_awq row
        q.update(group_size=options.awq_group_size, has_zero_point=False, pre_quant_scale=True)
    return {"producer": {"name": "llmbuild", "version": __version__}, "quantization": q}


def inline_quant_config(options, arch) -> dict | None:
    """config.json's quantization_config: ModelOpt's flat shape (convert_hf_quant_config_format), which
    vLLM's ModelOptQuantConfigBase.from_config and TensorRT-LLM's read_modelopt_quant_config read.
    config_groups come from ModelOpt's _quant_algo_to_group_config; group_size and the AWQ flags are
    also top-level, so TensorRT-LLM's warn_if_inline_diverges finds nothing to warn about."""
    legacy = hf_quant_config(options, arch)
    if legacy is None:
        return None
    q = legacy["quantization"]
    algo = q["quant_algo"]
    weights = {"dynamic": False, "num_bits": 8, "type": "float"}
    groups = {
        "FP8": {"input_activations": {"dynamic": False, "num_bits": 8, "type": "float"}, "weights": weights},
        "FP8_PER_CHANNEL_PER_TOKEN": {"input_activations": {"dynamic": False, "num_bits": 8, "type": "float"},
                                      "weights": {**weights, "strategy": "channel"}},
        "W4A16_AWQ": {"weights": {"dynamic": False, "num_bits": 4, "type": "int", "group_size": q.get("group_size")}},
    }[algo]
    out = {"config_groups": {"group_0": {**groups, "targets": ["Linear"]}}, "ignore": list(q["exclude_modules"]),
           "quant_algo": algo, "producer": legacy["producer"], "quant_method": "modelopt"}
    for k in ("group_size", "has_zero_point", "pre_quant_scale"):
        if k in q:
            out[k] = q[k]
    return out


def _write_metadata(ckpt, options, out_dir: Path, meta: ArtifactMeta) -> None:
    from llmbuild.targets import tokenizer_files

    cfg = dict(ckpt.config)
    cfg["dtype"] = DTYPES[options.dtype]
    cfg.pop("torch_dtype", None)  # transformers 5 names it dtype; both would disagree after a cast
    cfg.pop("quantization_config", None)
    inline = inline_quant_config(options, ckpt.arch)
    if inline:
        cfg["quantization_config"] = inline
        (out_dir / "hf_quant_config.json").write_text(json.dumps(hf_quant_config(options, ckpt.arch), indent=4) + "\n")
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tokenizer_files.ship(ckpt.dir, out_dir)
    if (ckpt.dir / "generation_config.json").is_file():
        shutil.copyfile(ckpt.dir / "generation_config.json", out_dir / "generation_config.json")
    if not (out_dir / "generation_config.json").exists():
        gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if cfg.get(k) is not None}
        (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def _max_seq_len(options, hf_config: dict) -> int:
    return options.max_seq_len or hf_config.get("max_position_embeddings") or 4096


def llm_api_options(options, hf_config: dict) -> dict:
    """TensorRT-LLM LLM-API options (the keys of `LLM(...)` / trtllm-serve's YAML): top-level
    max_batch_size and max_seq_len, KV-cache settings under kv_cache_config."""
    return {"max_batch_size": options.max_batch_size, "max_seq_len": _max_seq_len(options, hf_config),
            "kv_cache_config": {"free_gpu_memory_fraction": options.kv_cache_free_gpu_memory_fraction}}


def serve_commands(options, hf_config: dict) -> dict:
    """The exact command lines, run from the artifact folder."""
    trt = "trtllm-serve . --backend pytorch --extra_llm_api_options extra_llm_api_options.yaml"
    algo = quant_algo(options)
    if algo == "W4A16_AWQ":
        vllm, why = None, ("vLLM's modelopt loader (vllm/model_executor/layers/quantization/modelopt.py, "
                           "QUANT_ALGOS) does not accept W4A16_AWQ; serve this one with TensorRT-LLM")
    else:
        vllm = (f"vllm serve . --dtype {DTYPES[options.dtype]} --max-model-len {_max_seq_len(options, hf_config)} "
                f"--max-num-seqs {options.max_batch_size}" + (" --quantization modelopt" if algo else ""))
        why = None
    return {"trtllm-serve": trt, "vllm": vllm, **({"vllm_unsupported": why} if why else {})}


def _write_serve_files(out_dir: Path, options, hf_config: dict, meta: ArtifactMeta, serve: dict, algo) -> None:
    import yaml

    api = llm_api_options(options, hf_config)
    (out_dir / "extra_llm_api_options.yaml").write_text(
        "# TensorRT-LLM LLM-API options from the llmbuild recipe: trtllm-serve --extra_llm_api_options FILE,\n"
        "# or LLM(model=..., **yaml.safe_load(FILE)) in Python. Flags on the command line override these.\n"
        + yaml.safe_dump(api, sort_keys=False))
    what = {None: f"{options.dtype} weights, no quantization",
            "FP8": "FP8 E4M3 weights with per-tensor scales, static per-tensor activation scales calibrated on text",
            "FP8_PER_CHANNEL_PER_TOKEN": "FP8 E4M3 weights with per-channel scales, activations quantized per token at "
                                         "run time",
            "W4A16_AWQ": f"INT4 weights (AWQ, group size {options.awq_group_size}), {options.dtype} activations"}[algo]
    lines = [
        f"# Serving {meta.name} ({precision(options)})",
        "",
        f"A Hugging Face-layout checkpoint: {what}"
        + ("; ModelOpt unified format (`hf_quant_config.json`, `quantization_config` in config.json)." if algo else "."),
        "No engine is built: TensorRT-LLM (PyTorch backend) and vLLM load this folder as it is.",
        "",
        "Built for: " + "; ".join(f"{k} {v}" for k, v in BUILT_FOR.items()) + ".",
        "Nothing here ran these runtimes (they need an NVIDIA GPU); the checkpoint was verified on CPU, see the",
        "model card. Rebuild when a runtime changes the format.",
        "",
        "## TensorRT-LLM",
        "",
        ("From this folder (options in `extra_llm_api_options.yaml`: "
         f"max_batch_size {api['max_batch_size']}, max_seq_len {api['max_seq_len']}, "
         f"KV cache {api['kv_cache_config']['free_gpu_memory_fraction']} of free GPU memory):"),
        "",
        f"    {serve['trtllm-serve']}",
        "",
        "## vLLM",
        "",
    ]
    if serve["vllm"]:
        lines += ["From this folder:", "", f"    {serve['vllm']}", ""]
    else:
        lines += [f"Not supported: {serve['vllm_unsupported']}.", ""]
    (out_dir / "SERVE.md").write_text("\n".join(lines))


# -- schema ------------------------------------------------------------------------------------------


def check_schema(out_dir: Path) -> list[str]:
    """Problems with a written folder against the format (empty: none): the index covers the shards,
    every quantized linear has its scales with the dtypes and shapes the format gives them, excluded
    modules and every other tensor are unquantized, and the two quantization configs agree."""
    from llmbuild.checkpoint import safetensors_header

    out_dir = Path(out_dir)
    problems: list[str] = []
    cfg = json.loads((out_dir / "config.json").read_text())
    index = json.loads((out_dir / "model.safetensors.index.json").read_text())
    tensors: dict[str, dict] = {}
    for shard in sorted(set(index["weight_map"].values())):
        for name, info in safetensors_header(out_dir / shard).items():
            if name != "__metadata__":
                tensors[name] = info
                if index["weight_map"].get(name) != shard:
                    problems.append(f"{name}: in {shard} but the index says {index['weight_map'].get(name)}")
    missing = set(index["weight_map"]) - set(tensors)
    if missing:
        problems.append(f"index lists tensors no shard holds: {sorted(missing)[:3]}")
    total = sum(math.prod(t["shape"]) * _ITEMSIZE.get(t["dtype"], 0) for t in tensors.values())
    if index.get("metadata", {}).get("total_size") != total:
        problems.append(f"index total_size {index.get('metadata', {}).get('total_size')} != {total} bytes of tensors")
    dt = _ST_CODE.get(cfg.get("dtype"))
    if dt is None:
        problems.append(f"config.json dtype {cfg.get('dtype')!r} is not bfloat16/float16")
    qfile = out_dir / "hf_quant_config.json"
    inline = cfg.get("quantization_config")
    if not qfile.exists():
        if inline:
            problems.append("config.json has a quantization_config but there is no hf_quant_config.json")
        for name, t in tensors.items():
            if t["dtype"] != dt:
                problems.append(f"{name}: {t['dtype']} in an unquantized {dt} checkpoint")
        return problems
    q = json.loads(qfile.read_text())["quantization"]
    algo, excl = q.get("quant_algo"), q.get("exclude_modules") or []
    if not inline or inline.get("quant_method") != "modelopt" or inline.get("quant_algo") != algo:
        problems.append("config.json quantization_config does not match hf_quant_config.json (quant_method/quant_algo)")
    elif sorted(inline.get("ignore", [])) != sorted(excl) or inline.get("group_size") != q.get("group_size"):
        problems.append("config.json quantization_config ignore/group_size differ from hf_quant_config.json")
    from llmbuild.archs import for_config

    arch = for_config(cfg, str(out_dir / "config.json"))
    layout = _layout(arch)
    fused = {n for g in layout if g.norm for n in g.linears}
    g = q.get("group_size")
    quantized = set()
    for i in range(cfg["num_hidden_layers"]):
        # the groups' linears, and a mixture of experts' expert linears
        experts = [n[len(f"model.layers.{i}."):] for e in arch.layer(i).moe.experts
                   for n in e] if arch.mixture_of_experts else []
        for lin in [lin for grp in layout for lin in grp.linears] + experts:
            mod = f"model.layers.{i}.{lin}"
            if _excluded(mod, excl):
                continue
            quantized.add(mod)
            w, ws = tensors.get(f"{mod}.weight"), tensors.get(f"{mod}.weight_scale")
            isc, pqs = tensors.get(f"{mod}.input_scale"), tensors.get(f"{mod}.pre_quant_scale")
            if w is None or ws is None:
                problems.append(f"{mod}: weight or weight_scale missing")
                continue
            out = ws["shape"][0] if ws["shape"] else None
            if algo in ("FP8", "FP8_PER_CHANNEL_PER_TOKEN"):
                if w["dtype"] != "F8_E4M3" or ws["dtype"] != "F32":
                    problems.append(f"{mod}: weight {w['dtype']}/weight_scale {ws['dtype']}, want F8_E4M3/F32")
                if algo == "FP8" and (ws["shape"] != [] or isc is None or isc["dtype"] != "F32" or isc["shape"] != []):
                    problems.append(f"{mod}: FP8 wants a 0-d F32 weight_scale and input_scale")
                if algo == "FP8_PER_CHANNEL_PER_TOKEN" and (ws["shape"] != [w["shape"][0]] or isc is not None):
                    problems.append(f"{mod}: FP8_PER_CHANNEL_PER_TOKEN wants weight_scale [out] and no input_scale")
                if pqs is not None:
                    problems.append(f"{mod}: pre_quant_scale in an FP8 checkpoint")
            elif algo == "W4A16_AWQ":
                if w["dtype"] != "U8" or ws["dtype"] != "F32" or out is None:
                    problems.append(f"{mod}: weight {w['dtype']}/weight_scale {ws['dtype']}, want U8/F32")
                    continue
                if w["shape"] != [out // 2, ws["shape"][1] * g] or out % 2:
                    problems.append(f"{mod}: packed weight {w['shape']} does not fit weight_scale {ws['shape']} "
                                    f"with group_size {g}")
                if lin in fused and pqs is not None:
                    # TensorRT-LLM fuses these and never reads their pre_quant_scale: it must be in the norm
                    problems.append(f"{mod}: pre_quant_scale on a fused linear (TensorRT-LLM would ignore it)")
                if lin not in fused and (pqs is None or pqs["dtype"] != dt or pqs["shape"] != [w["shape"][1]]):
                    problems.append(f"{mod}: W4A16_AWQ wants pre_quant_scale [{w['shape'][1]}] in {dt}")
                if isc is not None:
                    problems.append(f"{mod}: input_scale in a weight-only checkpoint")
            else:
                problems.append(f"quant_algo {algo!r} is not one this backend writes")
                return problems
    for name, t in tensors.items():
        mod = name.rsplit(".", 1)[0]
        if mod in quantized:
            continue
        if t["dtype"] != dt:
            problems.append(f"{name}: {t['dtype']}, want {dt} (not a quantized linear{', excluded' if _excluded(mod, excl) else ''})")
    for mod in arch.unquantized_modules:
        if any(n.startswith(mod + ".") and not n.endswith((".weight", ".bias")) for n in tensors):
            problems.append(f"{mod}: excluded module has scale tensors")
    return problems


def _excluded(mod: str, patterns: list[str]) -> bool:
    """ModelOpt exclude_modules are names or fnmatch wildcards (vLLM's is_layer_excluded)."""
    from fnmatch import fnmatch

    return any(mod == p or fnmatch(mod, p) or mod.startswith(p + ".") for p in patterns)


# -- verification ------------------------------------------------------------------------------------


def run_logits(artifact_dir: Path, record: dict, token_ids: list[list[int]], split: int | None = None):
    """Logits [seq, vocab] (float32) for each probe, loaded by the loader the record names (see the
    module docstring). With `split`, the first tokens go in one pass and the rest one at a time through
    transformers' KV cache."""
    import numpy as np
    import torch

    model = _load(Path(artifact_dir), record)
    out = []
    with torch.inference_mode():
        for ids in token_ids:
            if split is None:
                logits = model(torch.tensor([ids])).logits[0]
            else:
                # transformers 5.24 names the KV cache `cache` (past_key_values is deprecated)
                res = model(torch.tensor([ids[:split]]), use_cache=True)
                parts, cache = [res.logits[0]], res.cache
                for tok in ids[split:]:
                    res = model(torch.tensor([[tok]]), cache=cache, use_cache=True)
                    parts.append(res.logits[0])
                    cache = res.cache
                logits = torch.cat(parts)
            out.append(logits.float().numpy().astype(np.float32))
    return out


def run_routing(artifact_dir: Path, record: dict, token_ids: list[list[int]]):
    """The experts the verifying loader's model runs per token: its routers' top-k (the router is never
    quantized; its input is what the quantized layers before it compute)."""
    import torch

    from llmbuild.stages.reference import routing_of

    model = _load(Path(artifact_dir), record)
    top_k = model.config.num_experts_per_tok
    with torch.inference_mode():
        return [routing_of(model(torch.tensor([ids]), output_router_logits=True).router_logits, top_k)
                for ids in token_ids]


def generate(artifact_dir: Path, record: dict, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None,
             threads: int = 2, timings: dict | None = None) -> list[int]:
    """Greedy decoding through the verifying loader's model and transformers' KV cache, so golden sets
    score the quantized checkpoint. Its speed is not a deployment figure (ModelOpt fake-quantizes in
    float32 on a CPU; the checkpoint is served by CUDA kernels): see SPEED_SKIPPED."""
    import torch

    from llmbuild.evaluation.greedy import greedy
    from llmbuild.evaluation.torch_runtime import torch_threads

    model = _load(Path(artifact_dir), record)
    state = {"cache": None}

    def step(ids: list[int]) -> int:
        out = model(torch.tensor([ids]), cache=state["cache"], use_cache=True, logits_to_keep=1)
        state["cache"] = out.cache
        return int(out.logits[0, -1].argmax())

    with torch_threads(threads), torch.inference_mode():
        return greedy(step, prompt_ids, max_new_tokens, eos_id, timings)


# evaluate.py skips the speed figures of backends that set this, with this reason
SPEED_SKIPPED = ("TensorRT-LLM and vLLM serve this checkpoint with CUDA kernels; the CPU loader that scores it "
                 "fake-quantizes in float32, so its speed says nothing about serving")


_LOADED: dict = {}


def _load(d: Path, record: dict):
    key = (str(d), record.get("quant_algo"), record.get("loader", {}).get("third_party"),
           max(f.stat().st_mtime_ns for f in d.glob("*.safetensors*")))
    if _LOADED.get("key") != key:
        _LOADED.clear()
        _LOADED.update(key=key, model=_load_model(d, record))
    return _LOADED["model"]


def _load_model(d: Path, record: dict):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmbuild.archs import for_config

    algo = record.get("quant_algo")
    if algo is None:
        return AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
    cfg = AutoConfig.from_pretrained(str(d))
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # transformers has no modelopt quantizer; the weights are dequantized here
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    q = json.loads((d / "hf_quant_config.json").read_text())["quantization"]
    tensors = _read_all(d)
    linears = sorted({n[: -len(".weight_scale")] for n in tensors if n.endswith(".weight_scale")})
    quantized = {f"{mod}.weight" for mod in linears}  # their biases (q/k/v where a family has them) load as they are
    state = {n: t.float() for n, t in tensors.items()
             if not n.endswith((".weight_scale", ".input_scale", ".pre_quant_scale")) and n not in quantized}
    state.update({f"{mod}.weight": _decode(q, tensors, mod) for mod in linears})
    arch = for_config(json.loads((d / "config.json").read_text()), str(d / "config.json"))
    if arch.mixture_of_experts:
        # per-expert tensors into transformers' fused experts: its own loader converts the keys
        model = trtllm_moe.load_model(d, cfg, state)
        experts = {f"{m}.weight" for m in linears} & arch.expert_sources()
        dense = [m for m in linears if f"{m}.weight" not in experts]
        if record.get("loader", {}).get("third_party", False):
            modelopt_loader.restore(model, q, tensors, dense)
            trtllm_moe.restore(model, q, tensors, arch)
        else:
            _hook_activations(model, q["quant_algo"], tensors, dense)
        return model
    result = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise ValueError(f"{d}: checkpoint does not match the model: missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}")
    if tied:
        model.tie_weights()
    if record.get("loader", {}).get("third_party", False):
        modelopt_loader.restore(model, q, tensors, linears)
    else:
        _hook_activations(model, q["quant_algo"], tensors, linears)
    return model


def _decode(q: dict, tensors: dict, mod: str):
    """A quantized linear's weight in float32, as every loader of the format reads it."""
    w, ws = tensors[f"{mod}.weight"], tensors[f"{mod}.weight_scale"].float()
    algo = q["quant_algo"]
    if algo == "FP8":
        return w.float() * ws
    if algo == "FP8_PER_CHANNEL_PER_TOKEN":
        return w.float() * ws[:, None]  # weight [out, in] e4m3 * weight_scale [out]
    if algo == "W4A16_AWQ":
        return dequantize_int4(w, ws, q["group_size"])
    raise ValueError(f"quant_algo {algo!r} is not one this reader knows")


def _hook_activations(model, algo: str, tensors: dict, linears: list[str]) -> None:
    """Where nvidia-modelopt is not installed: the activation side, hooked in before each quantized
    linear, following vLLM's ModelOptFp8LinearMethod / ModelOptFp8PcPtLinearMethod and TensorRT-LLM's
    W4A16_AWQ_LinearMethod. The record says `third_party: false`."""
    for mod in linears:
        sub = model.get_submodule(mod)
        if algo == "FP8":
            iscale = tensors[f"{mod}.input_scale"].float()
            sub.register_forward_pre_hook(lambda m, a, s=iscale: (_fp8_static(a[0], s),))
        elif algo == "FP8_PER_CHANNEL_PER_TOKEN":  # per token, amax / 448
            sub.register_forward_pre_hook(lambda m, a: (_fp8_per_token(a[0]),))
        elif f"{mod}.pre_quant_scale" in tensors:
            # W4A16_AWQ: input * pre_quant_scale (vanilla linears only; q/k/v and gate/up have theirs
            # folded into the norm), then the group-scaled int4 GEMM
            pqs = tensors[f"{mod}.pre_quant_scale"].float()
            sub.register_forward_pre_hook(lambda m, a, p=pqs: (a[0] * p,))


def _read_all(d: Path) -> dict:
    from safetensors import safe_open

    index = d / "model.safetensors.index.json"
    shards = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists()
              else ["model.safetensors"])
    out = {}
    for shard in shards:
        with safe_open(str(d / shard), framework="pt") as st:
            for name in st.keys():  # noqa: SIM118  (safe_open is not a dict)
                out[name] = st.get_tensor(name)
    return out


def _fp8_static(x, scale):
    import torch

    return (x / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(x.dtype) * scale


def _fp8_per_token(x):
    import torch

    s = (x.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    return (x / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(x.dtype) * s


class Trtllm(Backend):
    name = NAME
    Options = Options
    precisions = (*DTYPES, *(q for q in QUANTS if q != "none"))
    tools = TOOLS
    runtime = Runtime(RUNTIME_DIST, "transformers", "pip install transformers torch")
    path_options = ("calibration_text",)
    no_speed = SPEED_SKIPPED
    no_routing = None  # the verifying loader's model returns its router logits
    # vLLM, SGLang and TensorRT-LLM tokenize with transformers from the folder's files
    client = Client("transformers", "transformers", "pip install transformers", "the folder's tokenizer files")

    def check_options(self, options, key):
        check_options(options, key)

    def check_model(self, options, arch, model_dir, key):
        check_model(options, arch, key)
        if model_dir is not None:
            from llmbuild.targets import tokenizer_files

            tokenizer_files.check(model_dir, key)  # the checkpoint ships the tokenizer serving loads

    def check_family(self, options, cls, key):
        check_family(options, cls, key)

    def precision(self, options):
        return precision(options)

    def default_gates(self, options):
        return default_gates(options)

    def key_extra(self, options):
        return key_extra(options)

    def runtime_available(self):
        return runtime_available()

    def planned_files(self, options, model_name):
        return ["*.safetensors", "model.safetensors.index.json", "config.json",
                *(["hf_quant_config.json"] if options.quant != "none" else []), "generation_config.json",
                "tokenizer files", "extra_llm_api_options.yaml", "SERVE.md"]

    def export(self, ckpt, options, out_dir, meta, progress):
        return export(ckpt, options, out_dir, meta, progress)

    def run_logits(self, artifact_dir, record, token_ids, split=None):
        return run_logits(artifact_dir, record, token_ids, split)

    def run_routing(self, artifact_dir, record, token_ids):
        return run_routing(artifact_dir, record, token_ids)

    def generate(self, *args, **kwargs):
        return generate(*args, **kwargs)

    def open_client(self, artifact_dir, record, threads):
        from llmbuild.targets import hf_client

        return hf_client.open_session(self, artifact_dir, record, threads)

    def usage(self, target, record, files):
        serve = record.get("serve") or {}
        return [f"`{target}` with TensorRT-LLM or vLLM (run in `artifacts/{target}/`; see its SERVE.md):", "",
                "```bash", *(serve[k] for k in ("trtllm-serve", "vllm") if serve.get(k)), "```", "",
                *([f"vLLM: {serve['vllm_unsupported']}", ""] if serve.get("vllm_unsupported") else [])]

    def notes(self, record):
        notes = super().notes(record)
        loader = record.get("loader")
        if isinstance(loader, dict) and loader.get("third_party") is False:
            notes.append(f"verified with {loader.get('name')}, not a third-party loader (none runs on CPU)")
        elif isinstance(loader, dict) and loader.get("not_run"):
            notes.append(f"verified with {loader.get('name')}; not run here: {loader['not_run']}")
        return notes

    def serving(self, target, record):
        """SERVE.md's lines (written in the folder at export) from the build folder, plus vLLM's CPU build,
        whose `vllm serve` entry point is missing and whose KV cache needs a fixed size (hf.serving_lines says why)."""
        serve = record.get("serve") or {}
        d = f"artifacts/{target}"
        out = {k: [f"cd {d} && {serve[k]}"] for k in ("trtllm-serve", "vllm") if serve.get(k)}
        if serve.get("vllm"):
            out["vllm-cpu"] = [f"cd {d} && " + serve["vllm"].replace(
                "vllm serve .", "python -m vllm.entrypoints.openai.api_server --model .", 1)
                + " --kv-cache-memory-bytes 4G"]
        return out


BACKEND = Trtllm()
