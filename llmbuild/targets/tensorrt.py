"""The TensorRT target: an ONNX graph prepared for TensorRT, and the engine where one can be built.

A TensorRT engine is compiled for one GPU architecture by one TensorRT version (NVIDIA/TensorRT-LLM
issues #574, #3031: an engine moved to another GPU or TensorRT fails to load), so it can only be made
on the machine class that will run it. This target therefore always writes what the deployment
machine needs, and builds the engine only where that is possible:

- `model.onnx` (+ `model.onnx.data`): the causal LM as one graph, inputs `input_ids` and
  `attention_mask` [batch, seq] (int64), output `logits` [batch, seq, vocab], exported by
  `torch.onnx.export(dynamo=True)` with the model in fp16 or bf16. The tensor types carry the
  precision, so TensorRT builds it as a *strongly typed* network (NetworkDefinitionCreationFlag.
  STRONGLY_TYPED): what runs in fp16/bf16 is what the graph says (transformers' RMSNorm keeps its
  reduction in float32 through Cast nodes), not what the builder's precision heuristics choose.
  The graph has no KV-cache inputs: it is the prefill/scoring graph TensorRT profiles describe.
- `build_plan.json` and `BUILD_ENGINE.md`: the optimization profiles (min/opt/max of batch and
  sequence length) and the exact command, `python -m llmbuild.targets.tensorrt build-engine DIR`,
  which runs the `tensorrt` Python API (Builder, OnnxParser, optimization profile, timing cache).
- When an NVIDIA GPU and the `tensorrt` package are both present (`engine: auto|required`): the
  engine `model.engine` and `timing.cache`, built right here by the same code; the record names the
  GPU, its compute capability and the TensorRT version, which `key_extra` also puts in the cache key.
  Without them the record says `"engine": "deferred"` and claims no engine; `engine: required` on
  such a machine fails at plan time (exit 2).

`run_logits` runs the engine through TensorRT when it was built; otherwise it runs the prepared graph
in onnxruntime on CPU, so the graph itself is verified here. onnxruntime has no bf16 CPU kernels:
a bf16 graph is verified with its bf16 types widened to float32 (the weights are the bf16 values
exactly; the arithmetic is float32), and the record says so.

Peak memory while exporting is the model in fp16/bf16 plus the exporter's graph: torch.onnx traces a
whole model, there is no tensor-by-tensor path for a graph.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.targets.base import Backend, Runtime
from llmbuild.targets.common import ArtifactMeta, Gates, Progress, no_progress

NAME = "tensorrt"
TOOLS = ("torch", "transformers", "onnx", "onnxscript", "tensorrt")
RUNTIME_DIST = "onnxruntime"

PRECISIONS = {"fp16": "float16", "bf16": "bfloat16"}
ENGINE_MODES = ("auto", "required", "deferred")
INPUTS = ("input_ids", "attention_mask")
# The gguf target's f16/bf16 rows: the same rounding of the weights, here with fp16 arithmetic too
# (onnxruntime runs fp16 graphs in fp16; bf16 graphs are widened, see the module docstring).
DEFAULT_GATES = {
    "fp16": {"min_top1": 0.98, "max_kld": 1e-3, "max_abs_diff": 0.5, "max_ppl_ratio": 1.01},
    "bf16": {"min_top1": 0.97, "max_kld": 5e-3, "max_abs_diff": 1.0, "max_ppl_ratio": 1.02},
}
# a TensorRT engine generates only on the GPU it was built for, and the prepared graph has no KV cache
NO_GENERATION = "a TensorRT engine generates on the GPU it was built for; the prepared graph has no KV cache"


@dataclass
class Range:
    min: int = 1
    opt: int = 1
    max: int = 1


@dataclass
class Profiles:
    """TensorRT optimization profile: kernels are tuned for `opt`, any shape in [min, max] runs."""

    batch: Range = field(default_factory=lambda: Range(1, 1, 8))  # sequences per call; max sizes activation memory
    # tokens per sequence; max 0 = the model's max_position_embeddings. Larger max, larger activation buffers
    seq: Range = field(default_factory=lambda: Range(1, 128, 0))


@dataclass
class Options:
    backend: str = "tensorrt"
    precision: str = "fp16"  # fp16|bf16: fp16 is faster on older GPUs; bf16 keeps fp32's range (no overflow)
    # auto: build the engine when an NVIDIA GPU and tensorrt are here, else defer; required: fail at
    # plan time without them; deferred: never build here (the deployment machine runs BUILD_ENGINE.md)
    engine: str = "auto"
    profiles: Profiles = field(default_factory=Profiles)
    timing_cache: bool = True  # keep the builder's kernel timings: rebuilds on the same GPU take seconds, not minutes
    gates: Gates = field(default_factory=Gates)


# -- plan time ----------------------------------------------------------------------------------------


def precision(options) -> str:
    return options.precision


def default_gates(options) -> dict:
    return dict(DEFAULT_GATES[options.precision])


def runtime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def gpu_info() -> dict | None:
    """The NVIDIA GPU and TensorRT this process can build with, or None (no GPU, or no tensorrt)."""
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    import tensorrt as trt

    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}",
            "tensorrt": trt.__version__}


def will_build(options) -> dict | None:
    return gpu_info() if options.engine != "deferred" else None


def key_extra(options) -> dict:
    """An engine is tied to its GPU and TensorRT version, so both enter the export's cache key; a
    deferred build is keyed as such (its outputs do not depend on the machine)."""
    info = will_build(options)
    return {"engine": info} if info else {"engine": "deferred"}


def resolved(profiles: Profiles, dim: str, hf_config: dict) -> Range:
    r = getattr(profiles, dim)
    if dim == "seq" and r.max == 0:
        return Range(r.min, r.opt, hf_config.get("max_position_embeddings") or 0)
    return r


def check_options(options, key: str) -> None:
    """Recipe-only checks: precision, engine mode (and this machine's GPU), profiles min <= opt <= max."""
    if options.precision not in PRECISIONS:
        raise InvalidInput(f"{key}.precision: unknown precision {options.precision!r}; known: {', '.join(PRECISIONS)}")
    if options.engine not in ENGINE_MODES:
        raise InvalidInput(f"{key}.engine: unknown mode {options.engine!r}; known: {', '.join(ENGINE_MODES)}")
    for dim in ("batch", "seq"):
        r = getattr(options.profiles, dim)
        if dim == "seq" and r.max == 0:
            continue  # the model's context: checked with the model
        _check_range(r, f"{key}.profiles.{dim}")
    if options.engine == "required":
        if importlib.util.find_spec("tensorrt") is None:
            raise InvalidInput(f"{key}.engine: required, but the tensorrt package is not installed here "
                               "(pip install tensorrt on a machine with an NVIDIA GPU), or use engine: auto")
        if gpu_info() is None:
            raise InvalidInput(f"{key}.engine: required, but this machine has no NVIDIA GPU; an engine can only "
                               "be built on the GPU that runs it (use engine: auto or deferred)")


def _check_range(r: Range, where: str) -> None:
    if r.min < 1:
        raise InvalidInput(f"{where}.min: must be at least 1, got {r.min}")
    if not r.min <= r.opt <= r.max:
        raise InvalidInput(f"{where}: needs min <= opt <= max, got min {r.min}, opt {r.opt}, max {r.max}")


def check_model(options, arch, key: str) -> None:
    """Model checks: the sequence profile within the model's context."""
    ctx = arch.context
    if options.profiles.seq.max == 0 and not ctx:
        raise InvalidInput(f"{key}.profiles.seq.max: 0 means the model's context, but config.json has no "
                           "max_position_embeddings; give a number")
    r = resolved(options.profiles, "seq", arch.config)
    _check_range(r, f"{key}.profiles.seq")
    if ctx and r.max > ctx:
        raise InvalidInput(f"{key}.profiles.seq.max: {r.max} is beyond the model's context ({ctx} tokens)")


def check(options, hf_config: dict, key: str) -> None:
    """Both kinds of checks, for a config.json (tests and tools that have no plan)."""
    from llmbuild.archs import for_config

    check_options(options, key)
    check_model(options, for_config(hf_config), key)


# -- export -------------------------------------------------------------------------------------------


def export(ckpt, options, out_dir: Path, meta: ArtifactMeta, progress: Progress = no_progress) -> dict:
    """Write the prepared graph, the build plan and, where possible, the engine; returns the record."""
    out_dir = Path(out_dir)
    progress(0, 3, "exporting the ONNX graph")
    batch, seq = resolved(options.profiles, "batch", ckpt.config), resolved(options.profiles, "seq", ckpt.config)
    graph = export_onnx(ckpt.dir, options, batch, seq, out_dir, meta, ckpt.arch.hf_model_kwargs)
    plan = build_plan(options, batch, seq, graph)
    (out_dir / "build_plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    (out_dir / "BUILD_ENGINE.md").write_text(_build_doc(meta, options, plan))
    progress(1, 3, "graph written")
    rec = {"graph": "model.onnx", "precision": options.precision, "inputs": list(INPUTS), "outputs": ["logits"],
           "profiles": plan["profiles"], "opset": graph["opset"], "build_command": plan["command"],
           "strongly_typed": True, "kv_cache": False}
    info = will_build(options)
    if info is None:
        rec["engine"] = "deferred"
        rec["engine_reason"] = ("engine: deferred in the recipe" if options.engine == "deferred" else
                                "no NVIDIA GPU with tensorrt on the build machine")
    else:
        progress(2, 3, "building the TensorRT engine")
        rec.update(engine="built", **build_engine(out_dir))
    rec["verified_with"] = ("TensorRT engine" if rec["engine"] == "built" else
                            "onnxruntime CPU" + (" (bf16 types widened to float32)" if options.precision == "bf16" else ""))
    progress(3, 3, "done")
    return rec


def export_onnx(model_dir: Path, options, pb: Range, ps: Range, out_dir: Path, meta: ArtifactMeta,
                model_kwargs: dict | None = None) -> dict:
    """torch.onnx.export (dynamo) of the causal LM in the target precision, batch and seq dynamic
    within the profiles' ranges. The example batch is 2: torch.export specializes dims of size 0/1.
    `model_kwargs`: the family's from_pretrained options for tracing (a mixture of experts runs its
    experts as batched matmuls, which trace, instead of a loop over the experts hit, which does not)."""
    import onnx
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, PRECISIONS[options.precision])
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, **(model_kwargs or {})).eval()

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    seq = max(2, min(ps.opt, ps.max, 8))
    ids = torch.ones((2, seq), dtype=torch.long)
    batch = torch.export.Dim("batch", min=pb.min, max=max(pb.max, 2))
    length = torch.export.Dim("seq", min=ps.min, max=max(ps.max, seq))
    path = out_dir / "model.onnx"
    log = io.StringIO()  # the exporter narrates each step on stdout; keep the build's output readable
    quiet = logging.getLogger("torch.onnx")  # and warns about torchvision ops an LLM never uses
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with torch.no_grad(), contextlib.redirect_stdout(log), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations, nothing a user can act on
        torch.onnx.export(Logits(model).eval(), (ids, torch.ones_like(ids)), str(path), dynamo=True,
                          input_names=list(INPUTS), output_names=["logits"],
                          dynamic_shapes={"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}},
                          external_data=True, verbose=False)
    quiet.setLevel(level)
    del model
    m = onnx.load(str(path), load_external_data=False)
    for k, v in {"llmbuild.name": meta.name, "llmbuild.precision": options.precision,
                 "llmbuild.target": "tensorrt"}.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))  # header only: the weights stay in model.onnx.data
    return {"opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))}


def build_plan(options, pb: Range, ps: Range, graph: dict) -> dict:
    return {
        "onnx": "model.onnx",
        "engine": "model.engine",
        "precision": options.precision,
        "strongly_typed": True,
        "profiles": {name: {"min": [pb.min, ps.min], "opt": [pb.opt, ps.opt], "max": [pb.max, ps.max]}
                     for name in INPUTS},
        "timing_cache": "timing.cache" if options.timing_cache else None,
        "opset": graph["opset"],
        "command": "python -m llmbuild.targets.tensorrt build-engine .",
    }


def _build_doc(meta: ArtifactMeta, options, plan: dict) -> str:
    lo, mid, hi = (plan["profiles"]["input_ids"][k] for k in ("min", "opt", "max"))
    return "\n".join([
        f"# Building the TensorRT engine for {meta.name} ({options.precision})",
        "",
        "An engine is compiled for one GPU architecture by one TensorRT version: build it on the machine class",
        "that will run it, with the TensorRT it will run with. On that machine, from this folder:",
        "",
        "    pip install tensorrt        # with llmbuild installed from its repository (pip install -e .)",
        f"    {plan['command']}",
        "",
        "It parses `model.onnx` as a strongly typed network (the graph's fp16/bf16 types are the precision), adds",
        f"one optimization profile for `input_ids` and `attention_mask` [batch, seq]: batch {lo[0]}/{mid[0]}/{hi[0]}, "
        f"seq {lo[1]}/{mid[1]}/{hi[1]} (min/opt/max), "
        + ("keeps the kernel timings in `timing.cache` (a rebuild on the same GPU reuses them), " if options.timing_cache
           else "")
        + "and writes `model.engine` plus `engine.json` (GPU, compute capability, TensorRT version).",
        "",
        "The same with TensorRT's own tool (no timing-cache file, same profile):",
        "",
        "    trtexec --onnx=model.onnx --stronglyTyped --saveEngine=model.engine "
        + " ".join(f"--{k}Shapes=" + ",".join(f"{n}:{'x'.join(map(str, plan['profiles'][n][k]))}" for n in INPUTS)
                   for k in ("min", "opt", "max")),
        "",
    ])


def build_engine(out_dir: Path, timing_cache: Path | None = None) -> dict:
    """Build model.engine from model.onnx and build_plan.json with the tensorrt Python API; returns
    what the engine is tied to (GPU, compute capability, TensorRT version) and writes it to engine.json."""
    out_dir = Path(out_dir)
    if not (out_dir / "build_plan.json").is_file():
        raise InvalidInput(f"{out_dir}: no build_plan.json here; give the folder of a tensorrt artifact")
    plan = json.loads((out_dir / "build_plan.json").read_text())
    info = gpu_info()
    if info is None:
        raise InvalidInput(f"{out_dir}: building a TensorRT engine needs an NVIDIA GPU and the tensorrt package "
                           "(pip install tensorrt)")
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(out_dir / plan["onnx"])):  # reads model.onnx.data beside it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {plan['onnx']}: {errors}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, shapes in plan["profiles"].items():
        profile.set_shape(name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    config.add_optimization_profile(profile)
    cache_path = timing_cache or (out_dir / plan["timing_cache"] if plan.get("timing_cache") else None)
    if cache_path is not None:
        blob = Path(cache_path).read_bytes() if Path(cache_path).exists() else b""
        config.set_timing_cache(config.create_timing_cache(blob), False)
    t = time.monotonic()
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above)")
    (out_dir / plan["engine"]).write_bytes(bytes(engine))
    if cache_path is not None:
        Path(cache_path).write_bytes(bytes(config.get_timing_cache().serialize()))
    rec = {**info, "engine_file": plan["engine"], "build_seconds": round(time.monotonic() - t, 1),
           "timing_cache": Path(cache_path).name if cache_path else None}
    (out_dir / "engine.json").write_text(json.dumps(rec, indent=2) + "\n")
    return rec


# -- verification ------------------------------------------------------------------------------------


def run_logits(artifact_dir: Path, record: dict, token_ids: list[list[int]], split: int | None = None):
    """Logits [seq, vocab] (float32) per probe: through the engine when one was built here, else the
    prepared graph in onnxruntime on CPU. The graph has no KV cache, so with `split` each later token
    is scored by running the graph on the prefix that ends at it: every sequence length from `split`
    on goes through the graph's dynamic shapes, which is what a KV-cache graph's decode steps would
    exercise in the shape logic (the KV path itself belongs to the runtime that serves the engine)."""
    import numpy as np

    d = Path(artifact_dir)
    run = _engine_runner(d) if record.get("engine") == "built" else _ort_runner(d, record)
    out = []
    for ids in token_ids:
        if split is None:
            out.append(run(ids))
        else:
            rows = [run(ids[:split])]
            rows += [run(ids[: n + 1])[-1:] for n in range(split, len(ids))]
            out.append(np.concatenate(rows))
    return out


_SESSIONS: dict = {}


def _ort_runner(d: Path, record: dict):
    import numpy as np
    import onnxruntime as ort

    key = (str(d), (d / "model.onnx").stat().st_mtime_ns)
    if _SESSIONS.get("key") != key:
        _SESSIONS.clear()
        path, tmp = d / "model.onnx", None
        if record.get("precision") == "bf16":
            # a temporary folder, never the artifact's: the artifact is a content-addressed cache entry
            tmp = tempfile.TemporaryDirectory(prefix="llmbuild-trt-")
            path = widen_bf16(path, Path(tmp.name) / "model-fp32.onnx")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        _SESSIONS.update(key=key, tmp=tmp,
                         sess=ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]))
    sess = _SESSIONS["sess"]

    def run(ids):
        x = np.asarray([ids], dtype=np.int64)
        return sess.run(["logits"], {"input_ids": x, "attention_mask": np.ones_like(x)})[0][0].astype(np.float32)

    return run


def widen_bf16(src: Path, dst: Path) -> Path:
    """A copy of the graph with every bf16 type made float32 (initializers, constants, casts, value
    types), for onnxruntime's CPU provider, which has no bf16 kernels. Values are converted exactly."""
    import ml_dtypes  # noqa: F401  (numpy_helper returns bf16 arrays as ml_dtypes.bfloat16)
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnx.external_data_helper import load_external_data_for_model

    bf16, f32 = TensorProto.BFLOAT16, TensorProto.FLOAT
    # onnx refuses external data files with several hard links ("potential hardlink attack"), and the
    # build folder hard-links its artifacts to the cache: read a private copy of the data instead
    m = onnx.load(str(src), load_external_data=False)
    for loc in {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}:
        shutil.copyfile(src.parent / loc, dst.parent / loc)
    load_external_data_for_model(m, str(dst.parent))

    def fix_tensor(t):
        if t.data_type == bf16:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))

    def fix_type(tp):
        if tp.HasField("tensor_type") and tp.tensor_type.elem_type == bf16:
            tp.tensor_type.elem_type = f32

    def fix_nodes(nodes):
        for node in nodes:
            for a in node.attribute:
                if a.name == "to" and a.i == bf16:
                    a.i = f32
                if a.type == onnx.AttributeProto.TENSOR:
                    fix_tensor(a.t)
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    def walk(g):
        for t in g.initializer:
            fix_tensor(t)
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            fix_type(vi.type)
        fix_nodes(g.node)

    walk(m.graph)
    for f in m.functions:
        fix_nodes(f.node)
    onnx.save(m, str(dst), save_as_external_data=True, location=dst.name + ".data")
    for loc in {e for e in os.listdir(dst.parent)} - {dst.name, dst.name + ".data"}:
        os.remove(dst.parent / loc)  # the bf16 copy is no longer needed
    return dst


def _engine_runner(d: Path):
    import numpy as np
    import tensorrt as trt
    import torch

    plan = json.loads((d / "build_plan.json").read_text())
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine((d / plan["engine"]).read_bytes())
    ctx = engine.create_execution_context()
    dtypes = {trt.DataType.HALF: torch.float16, trt.DataType.BF16: torch.bfloat16, trt.DataType.FLOAT: torch.float32}

    def run(ids):
        x = torch.tensor([ids], dtype=torch.long, device="cuda")
        mask = torch.ones_like(x)
        for name, t in (("input_ids", x), ("attention_mask", mask)):
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        shape = tuple(ctx.get_tensor_shape("logits"))
        out = torch.empty(shape, dtype=dtypes[engine.get_tensor_dtype("logits")], device="cuda")
        ctx.set_tensor_address("logits", out.data_ptr())
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return out[0].float().cpu().numpy().astype(np.float32)

    return run


# -- the deployment machine's entry point ------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmbuild.targets.tensorrt",
                                 description="Build the TensorRT engine of a prepared llmbuild tensorrt artifact.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-engine", help="model.onnx + build_plan.json -> model.engine (needs an NVIDIA GPU)")
    b.add_argument("dir", type=Path, help="the artifact folder (holds model.onnx and build_plan.json)")
    b.add_argument("--timing-cache", type=Path, default=None, help="timing cache file to read and update")
    a = ap.parse_args(argv)
    try:
        rec = build_engine(a.dir, a.timing_cache)
    except InvalidInput as e:
        print(f"llmbuild: error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(rec, indent=2))
    return 0



class Tensorrt(Backend):
    name = NAME
    Options = Options
    precisions = tuple(PRECISIONS)
    tools = TOOLS
    runtime = Runtime(RUNTIME_DIST, "onnxruntime", "pip install onnxruntime")
    no_generation = NO_GENERATION
    # the prepared graph is the logits graph TensorRT profiles describe: its routers stay inside it
    no_routing = "the prepared graph outputs the logits only; its routers are internal to it"

    def check_options(self, options, key):
        check_options(options, key)

    def check_model(self, options, arch, model_dir, key):
        check_model(options, arch, key)

    def precision(self, options):
        return precision(options)

    def default_gates(self, options):
        return default_gates(options)

    def key_extra(self, options):
        return key_extra(options)

    def runtime_available(self):
        return runtime_available()

    def planned_files(self, options, model_name):
        engine = ["model.engine", "timing.cache"] if will_build(options) else []
        return ["model.onnx", "model.onnx.data", "build_plan.json", "BUILD_ENGINE.md", *engine]

    def export(self, ckpt, options, out_dir, meta, progress):
        return export(ckpt, options, out_dir, meta, progress)

    def run_logits(self, artifact_dir, record, token_ids, split=None):
        return run_logits(artifact_dir, record, token_ids, split)

    def usage(self, target, record, files):
        return [f"`{target}`: build the TensorRT engine where it will run (see BUILD_ENGINE.md):", "",
                "```bash", f"cd artifacts/{target} && {record.get('build_command')}", "```", ""]

    def notes(self, record):
        notes = super().notes(record)
        if record.get("engine") == "deferred":
            notes.append(f"TensorRT engine deferred ({record.get('engine_reason')}): build it on the deployment "
                         f"machine with `{record.get('build_command')}`")
        return notes


BACKEND = Tensorrt()


if __name__ == "__main__":
    sys.exit(main())
