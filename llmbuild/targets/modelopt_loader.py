"""Load a ModelOpt unified-format checkpoint (FP8, FP8_PER_CHANNEL_PER_TOKEN, W4A16_AWQ) into NVIDIA
ModelOpt's own quantized model and let ModelOpt compute it, on a CPU.

Neither transformers (no `modelopt` quantizer in 5.x) nor ModelOpt (`from_quantized_weight` only takes
per-tensor FP8 and INT8) has a loader for these folders, and TensorRT-LLM and vLLM need CUDA. But ModelOpt's
quantized modules run on a CPU, and a checkpoint is exactly the state they hold after calibration. So:

1. the transformers model is built from `config.json` with the checkpoint's weights decoded
   (trtllm._decode: FP8 `w * scale`, INT4 unpacked), and `mtq.quantize` puts ModelOpt's `QuantLinear`
   modules in it with the ModelOpt config the checkpoint names (`FP8_DEFAULT_CFG`,
   `FP8_PER_CHANNEL_PER_TOKEN_CFG`, `INT4_AWQ_CFG` with the checkpoint's group size), uncalibrated;
2. the quantizers get the checkpoint's state: weight `amax = weight_scale * maxbound` (ModelOpt's
   export writes `amax / maxbound`, quant_utils.get_scaling_factor), FP8 `input_scale * 448` as the
   static activation amax, AWQ `pre_quant_scale` on the input quantizer; modules without scales have
   their quantizers disabled;
3. ModelOpt's own exporter (`get_weight_scaling_factor`, `to_quantized_weight`) must re-encode every weight and
   scale to the stored bytes, which proves the decode is the inverse of ModelOpt's encoder;
4. the forward pass is ModelOpt's: `TensorQuantizer` fake-quantizes weights and activations (per
   tensor, per token, per group) with those amaxes; per-token inputs are flattened to [tokens, hidden]
   first, as the runtimes do (see per_token_inputs).

tests/targets/test_trtllm.py checks the whole path against ModelOpt end to end: ModelOpt's own
PTQ + `export_hf_checkpoint` of a tiny Llama, loaded here, gives ModelOpt's fake-quantized logits to
float32 rounding, for all three formats. What this does not run are TensorRT-LLM's and vLLM's CUDA
kernels: bench/gpu_check.sh does, where a GPU is lent.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io

# checkpoint quant_algo -> (ModelOpt config, ModelOpt's export format name, the weight maxbound)
FORMATS = {
    "FP8": ("FP8_DEFAULT_CFG", "fp8", 448.0),
    "FP8_PER_CHANNEL_PER_TOKEN": ("FP8_PER_CHANNEL_PER_TOKEN_CFG", "fp8_pc_pt", 448.0),
    "W4A16_AWQ": ("INT4_AWQ_CFG", "int4_awq", 7.0),
}


def available() -> bool:
    return importlib.util.find_spec("modelopt") is not None


def describe() -> str:
    version = importlib.metadata.version("nvidia-modelopt")
    return (f"nvidia-modelopt {version} QuantLinear modules (CPU fake-quant), state restored from the checkpoint; "
            "ModelOpt's exporter re-encodes every weight and scale bit-exact")


def modelopt_config(quant_algo: str, group_size: int | None = None) -> dict:
    """ModelOpt's own PTQ config for a checkpoint's quant_algo, with the INT4 group size (ignored by the
    FP8 formats): what
    `mtq.quantize` takes (the loader below drops its calibration algorithm; the tests and the bench
    run it to make ModelOpt's own checkpoint of the same model)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ModelOpt warns that transformers 5 is untested: the checks are ours
        import modelopt.torch.quantization as mtq

    cfg = getattr(mtq, FORMATS[quant_algo][0])
    entries = [({**e, "cfg": {**e["cfg"], "block_sizes": {-1: int(group_size), "type": "static"}}}
                if quant_algo == "W4A16_AWQ" and group_size and e.get("quantizer_name") == "*weight_quantizer"
                else dict(e))
               for e in cfg["quant_cfg"]]
    return {**cfg, "quant_cfg": entries}


def restore(model, quant: dict, tensors: dict, linears: list[str]) -> None:
    """Turn `model` (float32 transformers model holding the checkpoint's decoded weights) into ModelOpt's
    quantized model holding the checkpoint's quantizer state. `quant` is hf_quant_config.json's
    "quantization", `linears` the modules that have a weight_scale."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import modelopt.torch.quantization as mtq
        from modelopt.torch.export.quant_utils import (
            get_quantization_format,
            get_weight_scaling_factor,
            to_quantized_weight,
        )

    algo = quant["quant_algo"]
    _, fmt, maxbound = FORMATS[algo]
    group = quant.get("group_size")
    # algorithm None: insert the quantizers, calibrate nothing; their state comes from the checkpoint.
    # ModelOpt prints what it inserts on stdout: kept out of the build's output
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        mtq.quantize(model, {**modelopt_config(algo, group), "algorithm": None}, None)
    for name, mod in model.named_modules():
        if hasattr(mod, "weight_quantizer") and name not in linears:
            mod.weight_quantizer.disable()  # lm_head and whatever else the checkpoint left unquantized
            mod.input_quantizer.disable()
    for mod in linears:
        sub = model.get_submodule(mod)
        w, ws = tensors[f"{mod}.weight"], tensors[f"{mod}.weight_scale"].float()
        if algo == "W4A16_AWQ":
            sub.weight_quantizer.amax = (ws * maxbound).reshape(-1, 1)  # one row per group, row-major
            if f"{mod}.pre_quant_scale" in tensors:
                sub.input_quantizer.pre_quant_scale = tensors[f"{mod}.pre_quant_scale"].float()
        elif algo == "FP8":
            sub.weight_quantizer.amax = ws * maxbound
            sub.input_quantizer.amax = tensors[f"{mod}.input_scale"].float() * maxbound
        else:  # per output channel; activations per token at run time (no state)
            sub.weight_quantizer.amax = (ws * maxbound)[:, None]
        got = get_quantization_format(sub)
        if got != fmt:
            raise ValueError(f"{mod}: ModelOpt reads this module as {got!r}, the checkpoint says {fmt!r}")
        scale = get_weight_scaling_factor(sub).reshape(ws.shape)
        encoded = to_quantized_weight(sub.weight.data, scale, fmt, None, group)
        if not (torch.equal(scale, ws) and torch.equal(encoded.view(torch.uint8), w.view(torch.uint8))):
            raise ValueError(f"{mod}: ModelOpt's exporter does not re-encode the stored weight/scale bit-exact")
    if algo == "FP8_PER_CHANNEL_PER_TOKEN":
        per_token_inputs(model)


def per_token_inputs(model) -> None:
    """Give each quantized linear its input as [tokens, hidden], and reshape the output back.

    The runtimes scale FP8_PER_CHANNEL_PER_TOKEN activations per token (vLLM's Fp8LinearOp flattens
    the input to 2-D before its row-wise GEMM). ModelOpt's dynamic quantizer with block_sizes
    {-1: None} takes one amax per row of the leading dimension, so on the [batch, seq, hidden] input
    a transformers model passes, it would scale per sequence (measured: one amax for the whole probe,
    2.7% output error against per-token scaling on the test model). Flattened, it scales per token."""
    def flatten(mod, args):
        mod._llmbuild_shape = args[0].shape[:-1]
        return (args[0].reshape(-1, args[0].shape[-1]), *args[1:])

    def restore(mod, args, out):
        return out.reshape(*mod._llmbuild_shape, out.shape[-1])

    for mod in model.modules():
        if hasattr(mod, "input_quantizer") and mod.input_quantizer.is_enabled:
            mod.register_forward_pre_hook(flatten)
            mod.register_forward_hook(restore)
