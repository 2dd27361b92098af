"""The tensorrt backend on the tiny models: the prepared graph (fp16, and bf16 widened for onnxruntime's CPU
provider) against transformers under the default gates, the build plan and the honest "deferred" record on a
machine without an NVIDIA GPU, the build-engine entry point, and the plan-time rejections."""

from __future__ import annotations

import json

import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.errors import InvalidInput
from llmbuild.stages import reference
from llmbuild.stages.verify import apply_gates, compare
from llmbuild.targets import tensorrt as R
from llmbuild.targets.common import ArtifactMeta

META = ArtifactMeta(name="tiny-trt")
PROBES = ["The quick brown fox jumps over the lazy dog.", "one, two, three, four, five, six"]
NO_GPU = R.gpu_info() is None


@pytest.mark.parametrize("arch, prec", [("LlamaForCausalLM", "fp16"), ("Qwen2ForCausalLM", "bf16")])
def test_prepared_graph_matches_transformers(tiny_models, tmp_path, arch, prec):
    src = tiny_models[arch]
    (tmp_path / "ref").mkdir()
    reference.run(src, PROBES, 16, "auto", False, tmp_path / "ref")
    ids, ref = reference.load(tmp_path / "ref" / "reference.npz")
    opts = R.Options(precision=prec, profiles=R.Profiles(batch=R.Range(1, 2, 4), seq=R.Range(1, 16, 64)))
    ckpt = open_checkpoint(src)
    R.check(opts, ckpt.config, "targets.t")
    out = tmp_path / "out"
    out.mkdir()
    rec = R.export(ckpt, opts, out, META)
    json.dumps(rec)
    plan = json.loads((out / "build_plan.json").read_text())
    assert plan["profiles"]["input_ids"] == {"min": [1, 1], "opt": [2, 16], "max": [4, 64]}
    assert "python -m llmbuild.targets.tensorrt build-engine ." in (out / "BUILD_ENGINE.md").read_text()
    if NO_GPU:
        assert rec["engine"] == "deferred" and not (out / "model.engine").exists()
        assert R.key_extra(opts) == {"engine": "deferred"}
    full = R.run_logits(out, rec, ids)
    kv = [R.run_logits(out, rec, [i], split=len(i) // 2)[0] for i in ids]
    record = {"metrics": compare(ref, full), "kv_metrics": compare(ref, kv)}
    assert all(r["passed"] for r in apply_gates(record, R.default_gates(opts))), record
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["BUILD_ENGINE.md", "build_plan.json", "model.onnx", "model.onnx.data"]
        + (["engine.json", "model.engine", "timing.cache"] if rec["engine"] == "built" else []))


def _cfg(**kw) -> dict:
    from tests.conftest import TINY

    return {"architectures": ["LlamaForCausalLM"], "vocab_size": 512, "rms_norm_eps": 1e-6,
            **TINY["LlamaForCausalLM"], "max_position_embeddings": 256, **kw}


@pytest.mark.parametrize("opts, key", [
    ({"profiles": R.Profiles(seq=R.Range(512, 128, 64))}, "targets.t.profiles.seq:"),
    ({"profiles": R.Profiles(batch=R.Range(4, 2, 8))}, "targets.t.profiles.batch:"),
    ({"profiles": R.Profiles(seq=R.Range(1, 128, 4096))}, "targets.t.profiles.seq.max:"),
    ({"precision": "fp32"}, "targets.t.precision:"),
])
def test_bad_input_is_one_line_naming_the_key(opts, key):
    with pytest.raises(InvalidInput) as e:
        R.check(R.Options(**opts), _cfg(), "targets.t")
    assert str(e.value).startswith(key) and "\n" not in str(e.value) and e.value.exit_code == 2


@pytest.mark.skipif(not NO_GPU, reason="this machine can build engines")
def test_engine_required_without_a_gpu_fails_at_plan_time(tmp_path, capsys):
    with pytest.raises(InvalidInput, match=r"^targets\.t\.engine: required, but "):
        R.check(R.Options(engine="required"), _cfg(), "targets.t")
    (tmp_path / "build_plan.json").write_text("{}")
    assert R.main(["build-engine", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llmbuild: error: ") and "NVIDIA GPU" in err[0]
