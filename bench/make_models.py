"""Make the synthetic Llama checkpoints the benchmarks convert: `tiny` (19.0M parameters), `mid` (239.6M) and `1b` (971M).

    .venv/bin/python bench/make_models.py [tiny mid] [--out bench/.work/models]

The two models of docs/anchors.md: random weights from seed 0
(llmbuild.synth.create_model), float32 safetensors, and a SentencePiece tokenizer trained on
data/tokenizer_corpus.txt. The tokenizer has 2,000 pieces while config.json says vocab_size 32000, as in
the anchors: the embedding and output matrices have 32000 rows (they are most of a small model's bytes),
and llama.cpp's converter pads the vocabulary to 32000 with [PAD<n>] tokens (llmbuild's GGUF writer does
the same). A model already in --out is kept; delete its folder to make it again.

`1b` (4.05x `mid`'s parameters, 3.9 GB of float32: hidden 2048, 18 layers, 16 heads of 128, 4 KV heads,
intermediate 5888) is what bench/scale_memory.py converts beside `mid` to see whether peak memory grows with
the model. It is written tensor by tensor from a seeded generator, one safetensors shard per decoder layer
(transformers' init would hold the whole model, twice while saving), with the same tokenizer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work"

COMMON = {"vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}
MODELS = {
    # intermediate 640 is not in the anchors' notes; it is the size that gives their 19.0M parameters
    "tiny": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 1,
             "intermediate_size": 640, **COMMON},
    "mid": {"hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 4,
            "intermediate_size": 2688, **COMMON},
}
# made tensor by tensor (make_streamed): too large to initialize in memory on a small shared machine
STREAMED = {
    "1b": {"hidden_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 16, "num_key_value_heads": 4,
           "intermediate_size": 5888, **COMMON},
}
TOKENIZER_VOCAB = 2000  # pieces trained; config.json's vocab_size stays 32000 (see the docstring)


def make(name: str, out: Path = WORK / "models") -> Path:
    """The model's folder, made on first use."""
    path = out / name
    if (path / "config.json").exists() and any(path.glob("*.safetensors")):
        return path
    if name in STREAMED:
        return make_streamed(name, STREAMED[name], out)
    sys.path.insert(0, str(REPO))
    from llmbuild.synth import create_model

    tmp = out / f".{name}.partial"  # a run cut short leaves no folder that looks finished
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    create_model(tmp, "LlamaForCausalLM", MODELS[name], seed=0,
                 train_text=REPO / "data" / "tokenizer_corpus.txt", vocab_size=TOKENIZER_VOCAB)
    tmp.rename(path)
    return path


def make_streamed(name: str, config: dict, out: Path) -> Path:
    """A Llama checkpoint written one decoder layer per shard, random normal weights (std 0.02) from seed 0."""
    import json
    import shutil

    sys.path.insert(0, str(REPO))
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from llmbuild.synth import BOS_ID, EOS_ID, train_tokenizer

    path, tmp = out / name, out / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    train_tokenizer(REPO / "data" / "tokenizer_corpus.txt", TOKENIZER_VOCAB, tmp)
    cfg = LlamaConfig(**config, bos_token_id=BOS_ID, eos_token_id=EOS_ID, tie_word_embeddings=False)
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.dtype = "float32"
    cfg.save_pretrained(tmp)
    gen = torch.Generator().manual_seed(0)
    h, inter = config["hidden_size"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * h // config["num_attention_heads"]

    def rand(*shape):
        return torch.randn(shape, generator=gen) * 0.02

    n = config["num_hidden_layers"]
    shards = [f"model-{i + 1:05d}-of-{n + 1:05d}.safetensors" for i in range(n + 1)]
    weight_map = {}
    for i in range(n + 1):
        if i < n:
            p = f"model.layers.{i}."
            t = {p + "input_layernorm.weight": torch.ones(h), p + "post_attention_layernorm.weight": torch.ones(h),
                 p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.k_proj.weight": rand(kv, h),
                 p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.o_proj.weight": rand(h, h),
                 p + "mlp.gate_proj.weight": rand(inter, h), p + "mlp.up_proj.weight": rand(inter, h),
                 p + "mlp.down_proj.weight": rand(h, inter)}
        else:
            t = {"model.embed_tokens.weight": rand(config["vocab_size"], h), "model.norm.weight": torch.ones(h),
                 "lm_head.weight": rand(config["vocab_size"], h)}
        save_file(t, tmp / shards[i], metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(t, shards[i]))
        del t
    total = sum((tmp / s).stat().st_size for s in shards)
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}, indent=2))
    tmp.rename(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("models", nargs="*", metavar="MODEL", help=f"which models: {', '.join([*MODELS, *STREAMED])} (default: {', '.join(MODELS)})")
    ap.add_argument("--out", type=Path, default=WORK / "models", help="folder for the models (default: %(default)s)")
    a = ap.parse_args()
    for name in a.models or list(MODELS):
        if name not in MODELS and name not in STREAMED:
            ap.error(f"unknown model {name!r}; known: {', '.join([*MODELS, *STREAMED])}")
        t = time.monotonic()
        path = make(name, a.out)
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        print(f"{name}: {path} ({size / 1e6:.0f} MB, {time.monotonic() - t:.0f} s to make or find)")


if __name__ == "__main__":
    main()
