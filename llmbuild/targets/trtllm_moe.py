"""The trtllm target's mixture-of-experts parts: FP8 scales per expert as ModelOpt 0.47 exports them, the
calibration statistics they need, and the loader's way back into ModelOpt's quantized experts.

The checkpoint keeps the published per-expert layout (`block_sparse_moe.experts.E.w1` for Mixtral,
`mlp.experts.E.gate_proj` for Qwen), which TensorRT-LLM, vLLM and SGLang load. What ModelOpt does
with transformers 5's fused experts (modelopt/torch/quantization/plugins/huggingface.py
`_QuantFusedExperts`, modelopt/torch/export/moe_utils.py `_export_fused_experts`), and so what this
writes, checked against ModelOpt's own PTQ + export_hf_checkpoint in tests/targets/test_trtllm_moe.py:
- one weight quantizer per expert for its fused gate+up and one for its down: FP8 per tensor gives
  an expert's gate and up the same `weight_scale` (amax of both / 448), its down its own; per channel
  a scale per output row of each;
- one input quantizer per projection kind shared by all experts: every expert's gate and up carry the
  same `input_scale` (amax of the MoE block's input over the routed tokens / 448), every down the same
  (amax of the experts' gated activations on their tokens / 448);
- the router (`mlp.gate`, `block_sparse_moe.gate`) and Qwen2-MoE's `shared_expert_gate` are never
  quantized (ModelOpt's default configs disable them) and are listed per layer in exclude_modules; the
  shared expert's linears are quantized like any dense linear.
INT4-AWQ is not offered for experts (trtllm.check_family refuses it): ModelOpt's AWQ search for fused
experts and TensorRT-LLM's W4A16 MoE loading are not what this writer reproduces.
"""

from __future__ import annotations

# ModelOpt's FP8 maxbound (trtllm.FP8_MAX; not imported from there: trtllm imports this module)
FP8_MAX = 448.0

# _linear_of's group for an expert linear (the experts are not nn.Linear modules in transformers 5)
EXPERT_GROUP = "experts"


def expert_stats(layer, arch, i: int, x, top_k_index) -> dict:
    """What FP8 per tensor needs of layer i's experts, from its calibration input: the input amax of
    gate/up and of down (shared by the experts), each expert's gate+up weight amax."""
    import torch

    experts = layer.get_submodule(arch.EXPERTS_MODULE)
    gate_up = experts.gate_up_proj.detach()
    inter = arch.expert_intermediate
    x = x.reshape(-1, x.shape[-1]).float()
    idx = top_k_index.reshape(x.shape[0], -1)
    routed = torch.zeros(x.shape[0], dtype=torch.bool)
    down_amax = 0.0
    for e in range(arch.expert_count):
        tokens = (idx == e).any(dim=-1)
        if not tokens.any():
            continue
        routed |= tokens
        h = x[tokens] @ gate_up[e].T
        act = torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]
        down_amax = max(down_amax, float(act.abs().max()))
    return {"in_amax": float(x[routed].abs().max()) if routed.any() else 0.0, "down_amax": down_amax,
            "gate_up_amax": [float(gate_up[e].abs().max()) for e in range(arch.expert_count)]}


def convert(algo: str, proj: int, expert: int, w, st: dict) -> dict:
    """One expert matrix (float32 [out, in]) as FP8 tensors: {"": weight, "weight_scale", "input_scale"}."""
    import torch

    if algo == "FP8":
        amax = st["gate_up_amax"][expert] if proj < 2 else float(w.abs().max())
        scale = torch.tensor(max(amax, 1e-12) / FP8_MAX)
        q = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        in_amax = st["down_amax"] if proj == 2 else st["in_amax"]
        iscale = torch.tensor(in_amax / FP8_MAX if in_amax > 0 else 1.0, dtype=torch.float32)
        return {"": q, "weight_scale": scale.float(), "input_scale": iscale}
    scale = (w.abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX).float()
    return {"": (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), "weight_scale": scale}


def load_model(d, cfg, state: dict):
    """transformers' model of the checkpoint's family from a per-expert state dict in the checkpoint's
    names: from_pretrained's own key conversion fuses the experts (transformers conversion_mapping)."""
    import torch
    import transformers

    cls = getattr(transformers, cfg.architectures[0])
    return cls.from_pretrained(None, config=cfg, state_dict=state, dtype=torch.float32).eval()


def restore(model, quant: dict, tensors: dict, arch) -> None:
    """ModelOpt's quantized experts (mtq.quantize already ran) get the checkpoint's state: each expert's
    gate_up weight amax (its gate and up must share one per-tensor scale, as ModelOpt's export writes
    them), its down's, and the shared input amaxes; then ModelOpt's own exporter of fused experts must
    re-encode every expert weight and scale to the stored bytes."""
    import copy

    import torch
    from modelopt.torch.export.moe_utils import _export_fused_experts

    algo = quant["quant_algo"]
    for i in range(arch.layers):
        b = arch.layer(i).moe
        mod = model.get_submodule(f"model.layers.{i}.{arch.EXPERTS_MODULE}")
        ins = {0: set(), 2: set()}
        for e, names in enumerate(b.experts):
            g, u, d = (tensors[f"{n}.weight_scale"].float() for n in names)
            if algo == "FP8":
                if not torch.equal(g, u):
                    raise ValueError(f"{names[0]}: gate and up of an expert have different weight scales; ModelOpt's "
                                     "fused experts quantize them with one")
                mod.gate_up_proj_weight_quantizers[e].amax = g * FP8_MAX
                mod.down_proj_weight_quantizers[e].amax = d * FP8_MAX
                for k, n in ((0, names[0]), (0, names[1]), (2, names[2])):
                    ins[k].add(float(tensors[f"{n}.input_scale"]))
            else:  # per output channel; activations per token at run time
                mod.gate_up_proj_weight_quantizers[e].amax = torch.cat([g, u])[:, None] * FP8_MAX
                mod.down_proj_weight_quantizers[e].amax = d[:, None] * FP8_MAX
        if algo == "FP8":
            if len(ins[0]) != 1 or len(ins[2]) != 1:
                raise ValueError(f"layer {i}: experts carry different input scales; ModelOpt's fused experts share "
                                 "one input quantizer per projection")
            mod.gate_up_proj_input_quantizer.amax = torch.tensor(ins[0].pop() * FP8_MAX)
            mod.down_proj_input_quantizer.amax = torch.tensor(ins[2].pop() * FP8_MAX)
        twin = copy.deepcopy(mod)
        _export_fused_experts(twin, torch.bfloat16)
        for e, names in enumerate(b.experts):
            for proj, n in zip(("gate_proj", "up_proj", "down_proj"), names):
                got = twin.get_submodule(f"{e}.{proj}")
                for attr in ("weight", "weight_scale", *(("input_scale",) if algo == "FP8" else ())):
                    want = tensors[f"{n}.{attr}" if attr != "weight" else f"{n}.weight"]
                    have = getattr(got, attr)
                    if have.shape != want.shape or not torch.equal(have.view(torch.uint8) if have.dtype ==
                                                                   torch.float8_e4m3fn else have.float(),
                                                                   want.view(torch.uint8) if want.dtype ==
                                                                   torch.float8_e4m3fn else want.float()):
                        raise ValueError(f"{n}.{attr}: ModelOpt's exporter does not re-encode the stored value bit-exact")
        del twin
