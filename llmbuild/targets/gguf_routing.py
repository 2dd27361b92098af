"""Which experts llama.cpp picks: the routing of a GGUF mixture of experts, read from llama.cpp's own graph.

llama.cpp names the tensors of its MoE graph (src/llama-graph.cpp `build_moe_ffn`): the router's softmax
`ffn_moe_probs-{layer}`, its descending argsort `ffn_moe_argsort-{layer}` [n_expert, n_tokens] (int32),
and the first `n_expert_used` columns of that argsort are the experts it runs (`ffn_moe_topk`, a view).
The scheduler's evaluation callback (`llama_context_params.cb_eval`, what llama-imatrix and the
eval-callback tool use) is asked for every node; answering yes for the argsorts makes the scheduler hand
each one over once computed, and ggml_backend_tensor_get copies it out. So the routing here is the
runtime's, not a recomputation.

The probe is decoded in one batch with every position an output: llama.cpp otherwise drops the rows
of non-output tokens before the last layer's MLP (`inp_out_ids`), and the last layer would route only
the final token.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

ARGSORT = b"ffn_moe_argsort-"


def _ggml():
    """ggml's C functions the callback needs (in libggml-base, loaded by llama-cpp-python)."""
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    lib = ctypes.CDLL(str(next(lib_dir.glob("libggml-base.*"))))
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.restype = None
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    return lib


def routing(model_ptr, token_ids: list[int], n_expert: int, top_k: int, threads: int = 2):
    """The experts llama.cpp runs for each token: int array [layers, tokens, top_k] (each row sorted)."""
    import llama_cpp
    import numpy as np

    lib = _ggml()
    n = len(token_ids)
    found: dict[int, np.ndarray] = {}

    def callback(t, ask, _user):
        name = lib.ggml_get_name(t) or b""
        if not name.startswith(ARGSORT):
            return bool(not ask)  # ask: not wanted; a handed-over tensor: keep computing
        if ask:
            return True
        size = lib.ggml_nbytes(t)
        if size != n_expert * n * 4:
            raise RuntimeError(f"{name.decode()}: {size} bytes, expected int32 [{n_expert}, {n}]")
        buf = np.empty((n, n_expert), dtype=np.int32)
        lib.ggml_backend_tensor_get(t, buf.ctypes.data, 0, size)
        found[int(name[len(ARGSORT):])] = np.sort(buf[:, :top_k], axis=1)
        return True

    cb = llama_cpp.ggml_backend_sched_eval_callback(callback)  # kept alive until the context is freed
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = max(n, 8)
    params.n_threads = params.n_threads_batch = threads
    params.cb_eval = cb
    params.cb_eval_user_data = None
    ctx = llama_cpp.llama_init_from_model(model_ptr, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context for the routing pass")
    batch = llama_cpp.llama_batch_init(n, 0, 1)
    try:
        for i, tok in enumerate(token_ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, i, 1, True
            batch.seq_id[i][0] = 0
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}) in the routing pass")
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    if not found:
        raise RuntimeError("llama.cpp's graph named no ffn_moe_argsort tensor: not a mixture of experts?")
    return np.stack([found[i] for i in sorted(found)])
