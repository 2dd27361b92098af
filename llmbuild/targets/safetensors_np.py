"""Read safetensors tensors into numpy arrays without torch: the GGUF writer's reader.

Hand-written rather than safetensors' own numpy API because that API cannot return bfloat16 (numpy has
no such type), and bfloat16 is how most published checkpoints (Mixtral, Qwen) are stored; going through
torch instead costs its import, about 200 MB of resident memory before the first tensor (measured by
bench/moe_convert.py's baseline row), which is most of what a converter streaming one tensor at a time
holds. The format is a little-endian u64 header length, a JSON header of name -> dtype, shape and byte
offsets into the data that follows (huggingface/safetensors README "Format"), which
`llmbuild.checkpoint.safetensors_header` already parses and checks.

Each tensor is read with `numpy.fromfile` into a buffer of its own, not memory-mapped: the pages of a
mapping stay in the resident set while the array lives, a read buffer is freed with it. bfloat16 comes
back as `Bf16` (its raw bits); `widen` turns it into float32 exactly (the 16 bits are float32's high half),
in whichever thread converts the tensor.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

# safetensors dtype -> numpy dtype read as is (little-endian)
NUMPY = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1",
         "BOOL": "?"}


@dataclass
class Bf16:
    """A bfloat16 tensor as its raw bits (uint16), widened to float32 by `widen`."""

    bits: object  # numpy uint16 array

    @property
    def shape(self):
        return self.bits.shape


def widen(x):
    """float32 of a Bf16 (exact), anything else unchanged."""
    import numpy as np

    if isinstance(x, Bf16):
        wide = x.bits.astype(np.uint32)
        wide <<= 16  # in place: one float32-sized buffer, not two
        return wide.view(np.float32)
    return x


class Reader:
    """Tensors of a checkpoint's safetensors files by name; `readable(name)` says whether a tensor's dtype is
    one this reader returns (others go through torch)."""

    def __init__(self, index: dict[str, Path]):
        self.index = index
        self._headers: dict[Path, tuple[int, dict]] = {}

    def _header(self, path: Path) -> tuple[int, dict]:
        if path not in self._headers:
            from llmbuild.checkpoint import safetensors_header

            with path.open("rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
            self._headers[path] = (8 + n, safetensors_header(path))
        return self._headers[path]

    def readable(self, name: str) -> bool:
        path = self.index[name]
        return self._header(path)[1][name]["dtype"] in (*NUMPY, "BF16")

    def __call__(self, name: str):
        return self.rows(name, 0, None)

    def shape(self, name: str) -> list[int]:
        return self._header(self.index[name])[1][name]["shape"]

    def rows(self, name: str, first: int, stop: int | None):
        """Rows [first, stop) of the first axis (all of them with stop None), read from the file alone."""
        import numpy as np

        path = self.index[name]
        start, header = self._header(path)
        info = header[name]
        a, b = info["data_offsets"]
        dtype = np.dtype("<u2" if info["dtype"] == "BF16" else NUMPY[info["dtype"]])
        shape = list(info["shape"])
        per_row = (b - a) // max(shape[0], 1) if shape else b - a
        stop = shape[0] if stop is None or not shape else min(stop, shape[0])
        n = (stop - first) * per_row if shape else b - a
        with path.open("rb") as f:
            arr = np.fromfile(f, dtype=dtype, count=n // dtype.itemsize, offset=start + a + first * per_row)
        arr = arr.reshape([stop - first, *shape[1:]] if shape else [])
        return Bf16(arr) if info["dtype"] == "BF16" else arr
