"""llama.cpp's own block quantizers, called from the GGUF writer: `ggml_quantize_chunk` in libggml-base, the C
code behind llama-quantize's Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 (ggml/src/ggml-quants.c `quantize_q8_0` ...).

gguf-py's numpy quantizers make the same bytes (tests/targets/test_gguf_moe.py holds the two to each other,
tests/targets/test_gguf.py to llama.cpp's quantizer) but take about fifteen numpy passes over each tensor,
holding Python's lock between them; the C function takes one (about 2x numpy's speed on one core for a
3584x1024 Q8_0 matrix) and a ctypes call releases the lock, so the writer's threads quantize in parallel:
on the bench's 1.5B-parameter mixture of experts the conversion went from about 20 s to 10 s on 2 cores
(bench/moe_convert.py). F16 goes through libggml-cpu's `ggml_cpu_fp32_to_fp16` (F16C instructions where the
CPU has them): the bits of numpy's astype(float16), round to nearest even, at about 4x its speed
(32M values: 0.018 s against 0.078 s here). Used when llama-cpp-python is installed (it ships libggml);
otherwise gguf-py does the work.
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

# the gguf-py types made here: GGMLQuantizationType values are ggml's enum ggml_type
TYPES = ("F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
_LIB = None
_CPU = None


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _library(stem: str):
    """One of the shared libraries llama-cpp-python ships beside its Python code (llama_cpp/lib)."""
    spec = importlib.util.find_spec("llama_cpp")
    return ctypes.CDLL(str(next((Path(spec.origin).parent / "lib").glob(f"{stem}.*"))))


def _lib():
    global _LIB
    if _LIB is None:
        lib = _library("libggml-base")
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        _LIB = lib
    return _LIB


def _cpu():
    global _CPU
    if _CPU is None:
        lib = _library("libggml-cpu")
        lib.ggml_cpu_fp32_to_fp16.restype = None
        lib.ggml_cpu_fp32_to_fp16.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        _CPU = lib
    return _CPU


def quantize(x, qtype):
    """float32 rows [n, cols] -> uint8 [n, row bytes] of `qtype` (a gguf.GGMLQuantizationType in TYPES);
    F16: float16 values of x's shape."""
    import numpy as np

    x = np.ascontiguousarray(x, dtype=np.float32)
    if qtype.name == "F16":
        out = np.empty(x.shape, dtype=np.float16)
        _cpu().ggml_cpu_fp32_to_fp16(x.ctypes.data, out.ctypes.data, x.size)
        return out
    lib = _lib()
    rows, cols = x.reshape(-1, x.shape[-1]).shape
    out = np.empty((rows, lib.ggml_row_size(int(qtype), cols)), dtype=np.uint8)
    written = lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, rows, cols, None)
    if written != out.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes for {rows}x{cols} {qtype.name}, expected {out.nbytes}")
    return out
