"""Greedy generation through an ONNX graph with past key values, in onnxruntime on CPU.

The graph's interface is the one the onnx target writes and optimum/onnxruntime-genai use: input_ids,
attention_mask, position_ids (when the graph takes them; onnxruntime-genai's derive them from the mask)
and `past_key_values.N.key/value` in; logits and `present.N.key/value` out. The prompt runs once with an empty past, then each new token runs alone with the presents fed
back as the next past, which is what the KV cache saves. The graph returns logits for every input
position, so the prompt pass also pays for the output layer on each prompt token (as optimum's
exports do); only the last row is read.
"""

from __future__ import annotations

from pathlib import Path

from llmbuild.evaluation.greedy import greedy

# (model path, mtime, threads, provider) -> InferenceSession with that many intra-op threads
_SESSIONS: dict[tuple[str, int, int, str], object] = {}
_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def session(path: Path, threads: int, provider: str = "cpu"):
    import onnxruntime as ort

    key = (str(path), path.stat().st_mtime_ns, threads, provider)
    if key not in _SESSIONS:
        _SESSIONS.clear()  # one graph at a time: a build evaluates artifact after artifact
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # no busy-waiting between ops: on shared cores spinning threads starve the others
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _SESSIONS[key] = ort.InferenceSession(str(path), so, providers=_PROVIDERS[provider])
    return _SESSIONS[key]


def generate(artifact_dir: Path, record: dict, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None,
             threads: int = 2, timings: dict | None = None) -> list[int]:
    """Greedy tokens after the prompt (eos not included); `timings` gets prompt/decode seconds and steps."""
    sess = session(Path(artifact_dir) / record.get("file", "model.onnx"), threads)
    state = _State(sess, record)

    def step(ids: list[int]) -> int:
        return int(state.run(ids)[0, -1].argmax())

    return greedy(step, prompt_ids, max_new_tokens, eos_id, timings)


class _State:
    """One sequence's KV cache: feeds the graph what it takes and keeps its presents as the next past."""

    def __init__(self, sess, record: dict, batch: int = 1):
        import numpy as np

        self.sess = sess
        self.inputs = {i.name for i in sess.get_inputs()}
        pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
        kv_type = np.float16 if pasts and pasts[0].type == "tensor(float16)" else np.float32

        def dim(d, what):
            # onnxruntime-genai leaves the head size symbolic ("kv_cache_dim"): the record then says it
            if isinstance(d, int):
                return d
            if what not in record:
                raise ValueError(f"the graph's past key values have a symbolic {what}; pass it in the record")
            return record[what]

        self.past = {i.name: np.zeros((batch, dim(i.shape[1], "kv_heads"), 0, dim(i.shape[3], "head_dim")), kv_type)
                     for i in pasts}
        self.batch = batch
        self.names = [o.name for o in sess.get_outputs()]
        self.done = 0

    def run(self, ids: list[int] | list[list[int]]):
        """Logits [batch, len(ids), vocab] of the next tokens, after everything run before (a list of
        ids for batch 1, a list of equally long lists for a batch)."""
        import numpy as np

        x = np.array(ids if self.batch > 1 else [ids], np.int64)
        n = x.shape[1]
        feed = {"input_ids": x, "attention_mask": np.ones((self.batch, self.done + n), np.int64), **self.past}
        if "position_ids" in self.inputs:
            feed["position_ids"] = np.tile(np.arange(self.done, self.done + n, dtype=np.int64), (self.batch, 1))
        outs = dict(zip(self.names, self.sess.run(self.names, feed)))
        self.past = {f"past_key_values.{k.removeprefix('present.')}": v for k, v in outs.items()
                     if k.startswith("present.")}
        self.done += n
        return outs["logits"]


def run_logits(artifact_dir: Path, record: dict, token_ids: list[list[int]], split: int | None = None,
               threads: int = 2):
    """Logits [seq, vocab] (float32) of each sequence, every position, for any such graph (the bench
    scores onnxruntime-genai's with it); with `split`, the tokens after it go one at a time."""
    import numpy as np

    sess = session(Path(artifact_dir) / record.get("file", "model.onnx"), threads)
    out = []
    for ids in token_ids:
        state = _State(sess, record)
        cut = len(ids) if split is None else split
        parts = [state.run(c)[0] for c in [ids[:cut], *([t] for t in ids[cut:])] if c]
        out.append(np.concatenate(parts).astype(np.float32, copy=False))
    return out


def batchable(artifact_dir: Path, record: dict, threads: int = 2) -> bool:
    """Whether the artifact is a graph batch_logits can drive: past_key_values inputs with a free
    batch dimension (the onnx target's graphs; not the tensorrt target's, which has no KV cache). The
    session it opens is the one batch_logits and generate then use."""
    path = Path(artifact_dir) / record.get("file", "model.onnx")
    if path.suffix != ".onnx" or not path.is_file():
        return False
    inputs = session(path, threads, record.get("execution_provider", "cpu")).get_inputs()
    pasts = [i for i in inputs if i.name.startswith("past_key_values.")]
    return bool(pasts) and not isinstance(pasts[0].shape[0], int)


def batch_logits(artifact_dir: Path, record: dict, token_ids: list[list[int]], threads: int = 2):
    """Logits [len, vocab] (float32) of each sequence, every position, in one batched run of the graph.

    The sequences are padded on the right to the longest: the graph is causal, so a position's logits
    depend on the tokens up to it only, and the padding (which comes after) changes none of the rows
    returned. With an empty past this is the same computation as `run_logits`, a batch at a time.
    """
    import numpy as np

    if not token_ids:
        return []
    sess = session(Path(artifact_dir) / record.get("file", "model.onnx"), threads,
                   record.get("execution_provider", "cpu"))
    width = max(len(ids) for ids in token_ids)
    padded = [list(ids) + [0] * (width - len(ids)) for ids in token_ids]
    state = _State(sess, record, batch=len(padded))
    logits = state.run(padded if len(padded) > 1 else padded[0])
    return [logits[i, :len(ids)].astype(np.float32) for i, ids in enumerate(token_ids)]
