"""The importance matrix (llama.cpp's `llama-imatrix`), computed in torch on the source model.

For every weight matrix that multiplies activations, llama.cpp's imatrix collector sums the squares
of the matrix's input activations per input column over all calibration tokens (`in_sum2`), and
counts the tokens (`counts`); the quantizer weighs each column's rounding error by `in_sum2/counts`
(tools/quantize's loader divides before it fills `llama_model_imatrix_data`). Here the same sums are
taken with forward pre-hooks on the source model's `nn.Linear` modules, keyed by llama.cpp's tensor
names. The calibration text is cut like `llama-imatrix` cuts it: chunks of `chunk` tokens, the first
token of each replaced by BOS when the vocabulary adds one; `output.weight` is left out as
`llama-imatrix` does unless `--process-output` is given (its input is the last hidden state, and the
K-quants give the output matrix Q6_K anyway).

`write_gguf` stores the result in llama.cpp's GGUF imatrix format (`<name>.in_sum2`, `<name>.counts`,
`imatrix.datasets|chunk_count|chunk_size`), so `llama-quantize --imatrix` can reuse the shipped file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.evaluation.data import read_text

# llama-imatrix's default context: the chunk length the sums are taken over
DEFAULT_CHUNK = 512
MIN_TOKENS = 16  # below this the statistics say nothing about the columns


@dataclass
class Imatrix:
    sums: dict = field(default_factory=dict)  # llama.cpp tensor name -> float64 numpy [in_features]
    counts: dict = field(default_factory=dict)  # name -> tokens seen
    chunks: int = 0
    chunk_size: int = 0
    tokens: int = 0
    dataset: str = ""

    def values(self) -> dict:
        """name -> float32 mean of squared activations: what llama.cpp's quantizer receives."""
        import numpy as np

        return {n: (s / self.counts[n]).astype(np.float32) for n, s in self.sums.items() if self.counts[n]}


def compute(model_dir: Path, text_file: str, arch, chunk: int, key: str, skip_output: bool = True) -> Imatrix:
    """Sums of squared inputs per column of every linear layer, over the calibration text, keyed by
    llama.cpp's tensor names (the architecture object's `gguf_name`)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = read_text(text_file, key)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tok(text, add_special_tokens=False).input_ids
    if len(ids) < MIN_TOKENS:
        raise InvalidInput(f"{key}: {text_file} has {len(ids)} tokens; the importance matrix needs at least "
                           f"{MIN_TOKENS}")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    chunk = min(chunk, model.config.max_position_embeddings)
    # llama-imatrix uses whole chunks only; a text shorter than one chunk is one chunk
    n_chunks = max(1, len(ids) // chunk)
    bos = tok.bos_token_id if _adds_bos(tok) else None

    im = Imatrix(chunk_size=chunk, dataset=Path(text_file).name)
    hooks = []

    def hook(name):
        def pre(_mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            s = (x * x).sum(0).numpy()
            im.sums[name] = im.sums[name] + s if name in im.sums else s
            im.counts[name] = im.counts.get(name, 0) + x.shape[0]
        return pre

    for mname, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            gname = arch.gguf_name(f"{mname}.weight")
            if gname is None or (skip_output and gname == "output.weight"):
                continue
            hooks.append(mod.register_forward_pre_hook(hook(gname)))
    try:
        with torch.inference_mode():
            for c in range(n_chunks):
                part = list(ids[c * chunk:(c + 1) * chunk])
                if bos is not None:
                    part[0] = bos
                model(torch.tensor([part]))
                im.tokens += len(part)
                im.chunks += 1
    finally:
        for h in hooks:
            h.remove()
    if not im.sums:
        raise InvalidInput(f"{key}: no linear layer of {model_dir} maps to a llama.cpp tensor name")
    im.sums = {n: np.asarray(s, dtype=np.float64) for n, s in im.sums.items()}
    return im


def _adds_bos(tok) -> bool:
    if tok.bos_token_id is None:
        return False
    probe = tok("a").input_ids
    return bool(probe) and probe[0] == tok.bos_token_id


def write_gguf(im: Imatrix, path: Path) -> None:
    """llama.cpp's GGUF imatrix file: what `llama-imatrix -o imatrix.gguf` writes."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(path, arch="imatrix")
    # llama-imatrix's own keys; general.architecture is gguf-py's and harmless to llama.cpp's loader
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", [im.dataset])
    w.add_uint32("imatrix.chunk_count", im.chunks)
    w.add_uint32("imatrix.chunk_size", im.chunk_size)
    for name in sorted(im.sums):
        w.add_tensor(f"{name}.in_sum2", im.sums[name].astype(np.float32).reshape(1, -1))
        w.add_tensor(f"{name}.counts", np.array([[im.counts[name]]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
