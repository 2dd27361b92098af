"""Property tests (Hypothesis) of the checkpoint reader and the recipe typing: random safetensors headers,
truncated and corrupted files, random override strings. Every case ends in a result or an InvalidInput,
never another exception, within a bounded time. The default run keeps the example counts modest; the
slow-marked twins run many more."""

from __future__ import annotations

import json
import struct
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmbuild.errors import InvalidInput
from tests.helpers import REPO

FEW, MANY = 40, 600
FAST = dict(deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow], derandomize=False)

DTYPES = ["F32", "F16", "BF16", "I64", "I32", "U8", "BOOL", "F64", "F8_E4M3", "F8_E5M2", "U16", "Q4", "f32", ""]
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1,
          "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 4, "rms_norm_eps": 1e-5}


def read_everything(model_dir: Path) -> None:
    """What a build does with a checkpoint: open it, read each tensor, scan the weights."""
    from llmbuild.checkpoint import nonfinite, open_checkpoint

    ckpt = open_checkpoint(model_dir)
    ckpt.param_count()
    for name in ckpt.tensor_names:
        ckpt.get_tensor(name)
    nonfinite(ckpt)


def result_or_invalid_input(fn) -> None:
    try:
        fn()
    except InvalidInput as e:
        assert str(e) and "\n" not in str(e)


# -- safetensors headers ------------------------------------------------------------------------------
dims = st.lists(st.one_of(st.integers(0, 6), st.integers(-3, -1), st.just(2**40), st.text(max_size=2)), max_size=3)
offsets = st.one_of(st.lists(st.one_of(st.integers(-4, 600), st.floats(allow_nan=True), st.none()), max_size=3),
                    st.none(), st.text(max_size=3))


@st.composite
def headers(draw):
    """A header (usually almost right: consistent offsets with a random flaw) and a data size."""
    header, pos = {}, 0
    for i in range(draw(st.integers(0, 4))):
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        n = 1
        for d in shape:
            n *= d
        size = n * {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "F64": 8, "U16": 2}.get(dtype, 1)
        entry = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + size]}
        flaw = draw(st.sampled_from(["none", "none", "shape", "offsets", "gap", "missing", "type"]))
        if flaw == "shape":
            entry["shape"] = draw(dims)
        elif flaw == "offsets":
            entry["data_offsets"] = draw(offsets)
        elif flaw == "gap":
            entry["data_offsets"] = [pos + 1, pos + 1 + size]
        elif flaw == "missing":
            del entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))]
        elif flaw == "type":
            entry = draw(st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2)))
        header[draw(st.sampled_from([f"model.t{i}", "__metadata__", f"w{i}", ""]))] = entry
        pos += size
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
                                                st.integers(), st.none()))
    return header, pos + draw(st.sampled_from([0, 0, 0, -1, 1, 7]))


def write_checkpoint(d: Path, blob: bytes) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(CONFIG))
    (d / "model.safetensors").write_bytes(blob)
    return d


def header_blob(header, data_size: int, length_delta: int, raw: bytes | None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", max(0, len(text) + length_delta)) + text + bytes(max(0, data_size))


def check_header_case(header, data_size, length_delta, raw):
    with tempfile.TemporaryDirectory() as tmp:
        d = write_checkpoint(Path(tmp) / "m", header_blob(header, data_size, length_delta, raw))
        result_or_invalid_input(lambda: read_everything(d))


header_case = (headers(), st.sampled_from([0, 0, 0, -1, 3, -(2**20)]),
               st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=40)))


@settings(max_examples=FEW, **FAST)
@given(*header_case)
def test_random_safetensors_headers(case, length_delta, raw):
    check_header_case(case[0], case[1], length_delta, raw)


@pytest.mark.slow
@settings(max_examples=MANY, **FAST)
@given(*header_case)
def test_random_safetensors_headers_many(case, length_delta, raw):
    check_header_case(case[0], case[1], length_delta, raw)


# -- truncated and corrupted real files ---------------------------------------------------------------
@pytest.fixture(scope="module")
def real_weights(tiny_models) -> bytes:
    return (tiny_models["LlamaForCausalLM"] / "model.safetensors").read_bytes()


def check_damaged(real: bytes, cut: float, flips: list[tuple[float, int]]):
    blob = bytearray(real[: int(len(real) * cut)])
    n = struct.unpack("<Q", real[:8])[0] + 8
    for where, value in flips:  # damage inside the header, where a flipped byte changes the meaning
        if blob:
            blob[int(where * min(n, len(blob) - 1))] = value
    with tempfile.TemporaryDirectory() as tmp:
        d = write_checkpoint(Path(tmp) / "m", bytes(blob))
        cfg = dict(CONFIG, hidden_size=64, vocab_size=512)
        (d / "config.json").write_text(json.dumps(cfg))
        result_or_invalid_input(lambda: read_everything(d))


damage = (st.floats(0, 1), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3))


@settings(max_examples=FEW, **FAST)
@given(*damage)
def test_truncated_or_corrupted_safetensors(real_weights, cut, flips):
    check_damaged(real_weights, cut, flips)


@pytest.mark.slow
@settings(max_examples=MANY, **FAST)
@given(*damage)
def test_truncated_or_corrupted_safetensors_many(real_weights, cut, flips):
    check_damaged(real_weights, cut, flips)


# -- override strings ---------------------------------------------------------------------------------
KEYS = ["model.seed", "model.source", "model.dtype", "model.path", "model.repo_id", "model.config.hidden_size",
        "model.tokenizer.vocab_size", "build.dry_run", "build.model_name", "targets.gguf8.quant",
        "targets.gguf8.backend", "targets.gguf8.gates.min_top1", "targets.onnx32.dtype", "targets.onnx32",
        "targets.new.backend", "eval.max_tokens", "eval.probes", "eval.tasks", "eval.golden", "eval.window",
        "license.id", "license.unknown", "license.waivers", "license.facts.monthly_active_users", "finetune",
        "finetune.lr", "finetune.max_steps", "hydra.run.dir", "recipe"]
VALUES = st.one_of(st.integers(-3, 10**12).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                   st.sampled_from(["null", "true", "[]", "{}", "[a, b]", "{a: 1}", "${model.seed}", "${nope}",
                                    "'quoted'", "\"x\"", "q4_0", "init", "hub", "local", "onnx", "gguf", "fp16",
                                    "none", "lora", "[{name: m}]", "???", "a,b", "~", "=", "'", "\\", "${oc.env:X}"]),
                   st.text(max_size=12))
OVERRIDES = st.lists(st.one_of(
    st.tuples(st.sampled_from(["", "+", "++", "~"]), st.one_of(st.sampled_from(KEYS), st.text(max_size=10)),
              st.sampled_from(["=", "=", ""]), VALUES).map("".join),
    st.text(max_size=20)), min_size=1, max_size=3)


def check_overrides(overrides: list[str]):
    from llmbuild import cli
    from llmbuild.config import typed_config
    from llmbuild.plan import make_plan

    recipe = REPO / "tests" / "recipes" / "tiny.yaml"

    def compose_type_plan():
        cfg = cli.compose(recipe, ["recipe=tiny", *overrides])
        make_plan(typed_config(cfg))

    result_or_invalid_input(compose_type_plan)


@settings(max_examples=FEW, **FAST)
@given(OVERRIDES)
def test_random_override_strings(overrides):
    check_overrides(overrides)


@pytest.mark.slow
@settings(max_examples=MANY, **FAST)
@given(OVERRIDES)
def test_random_override_strings_many(overrides):
    check_overrides(overrides)
