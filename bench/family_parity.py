"""Parity of every artifact of one model family against transformers, as figures (what tests/test_families.py
gates): top-1 agreement, mean KLD and max |dlogit| per precision of every backend, full pass and through each
runtime's KV cache, on the family's tiny model (its registry config: architecture name or variant).

    .venv/bin/python bench/family_parity.py Gemma2ForCausalLM
    .venv/bin/python bench/family_parity.py phi4-mini --cases onnx:fp32 gguf:q4_k_m

The model is made under bench/.work/families/ (llmbuild.synth, seed 0, the shipped corpus's tokenizer).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CORPUS = REPO / "data" / "tokenizer_corpus.txt"
CASES = {
    "onnx:fp32": {}, "onnx:fp16": {"dtype": "fp16"}, "onnx:int4": {"quant": "int4"},
    "gguf:f32": {"quant": "f32"}, "gguf:q8_0": {"quant": "q8_0"}, "gguf:q4_k_m": {"quant": "q4_k_m"},
    "trtllm:bf16": {}, "trtllm:fp8": {"quant": "fp8", "calibration_text": str(CORPUS), "calibration_tokens": 256},
    "tensorrt:fp16": {},
}


def model_dir(name: str) -> Path:
    from llmbuild import archs
    from llmbuild.synth import create_model

    variants = {v: spec for a in archs.names() for v, spec in archs.arch_class(a).variants.items()}
    arch, over = variants.get(name, (name, {}))
    cls = archs.arch_class(arch)
    d = REPO / "bench" / ".work" / "families" / name
    shutil.rmtree(d, ignore_errors=True)
    return create_model(d, arch, {**cls.tiny, **over}, seed=0, train_text=CORPUS, vocab_size=512,
                        norm_jitter=cls.tiny_norm_jitter)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="an architecture (e.g. Gemma2ForCausalLM) or a family's variant (e.g. phi4-mini)")
    ap.add_argument("--cases", nargs="*", default=list(CASES), help=f"backend:precision (default: {' '.join(CASES)})")
    args = ap.parse_args()
    import logging

    logging.disable(logging.INFO)  # the quantizers and exporters narrate every node at INFO

    import torch
    from transformers import AutoModelForCausalLM

    from llmbuild import targets
    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.stages.verify import compare
    from llmbuild.targets.common import ArtifactMeta

    d = model_dir(args.model)
    rng = np.random.default_rng(7)
    probes = [[1, *rng.integers(3, 512, n).tolist()] for n in (22, 46)]
    ref_model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = [ref_model(torch.tensor([p])).logits[0].numpy() for p in probes]
    print(f"{args.model}: {sum(p.numel() for p in ref_model.parameters()):,} parameters; probes of "
          f"{', '.join(str(len(p)) for p in probes)} tokens")
    print(f"{'artifact':15s} {'top-1':>6s} {'KLD':>9s} {'max|dl|':>8s}   {'KV top-1':>8s} {'KV KLD':>9s}  context")
    for case in args.cases:
        backend, _ = case.split(":")
        b = targets.backend(backend)
        opts = b.Options(**CASES[case])
        ckpt = open_checkpoint(d)
        b.check_options(opts, case)
        b.check_model(opts, ckpt.arch, ckpt.dir, case)
        with tempfile.TemporaryDirectory() as tmp:
            rec = b.export(ckpt, opts, Path(tmp), ArtifactMeta(name=args.model), lambda *a: None)
            ctx, _ = b.context_length(opts, ckpt.arch)
            cut = [p[:ctx] for p in probes]
            r = [x[: len(p)] for x, p in zip(ref, cut)]
            full = compare(r, b.run_logits(Path(tmp), rec, cut))
            kv = compare(r, [b.run_logits(Path(tmp), rec, [p], split=len(p) // 2)[0] for p in cut])
        print(f"{case:15s} {full['top1']:6.3f} {full['kld_mean']:9.2e} {full['max_abs_diff']:8.2e}   "
              f"{kv['top1']:8.3f} {kv['kld_mean']:9.2e}  {ctx}")


if __name__ == "__main__":
    main()
