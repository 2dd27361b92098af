"""Make the synthetic Llama checkpoints the benchmarks convert: `tiny` (19.0M parameters) and `mid` (239.6M).

    .venv/bin/python bench/make_models.py [tiny mid] [--out bench/.work/models]

The two models of docs/anchors.md: random weights from seed 0
(llmbuild.synth.create_model), float32 safetensors, and a SentencePiece tokenizer trained on
data/tokenizer_corpus.txt. The tokenizer has 2,000 pieces while config.json says vocab_size 32000, as in
the anchors: the embedding and output matrices have 32000 rows (they are most of a small model's bytes),
and llama.cpp's converter pads the vocabulary to 32000 with [PAD<n>] tokens (llmbuild's GGUF writer does
the same). A model already in --out is kept; delete its folder to make it again.
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
TOKENIZER_VOCAB = 2000  # pieces trained; config.json's vocab_size stays 32000 (see the docstring)


def make(name: str, out: Path = WORK / "models") -> Path:
    """The model's folder, made on first use."""
    path = out / name
    if (path / "config.json").exists() and any(path.glob("*.safetensors")):
        return path
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("models", nargs="*", metavar="MODEL", help=f"which models: {', '.join(MODELS)} (default: all)")
    ap.add_argument("--out", type=Path, default=WORK / "models", help="folder for the models (default: %(default)s)")
    a = ap.parse_args()
    for name in a.models or list(MODELS):
        if name not in MODELS:
            ap.error(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        t = time.monotonic()
        path = make(name, a.out)
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        print(f"{name}: {path} ({size / 1e6:.0f} MB, {time.monotonic() - t:.0f} s to make or find)")


if __name__ == "__main__":
    main()
