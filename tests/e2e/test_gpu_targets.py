"""recipes/gpu-targets.yaml as shipped, through the CLI (issue 6): every checkpoint is built and passes
its gates through a third-party loader, and the manifest and the card say what was built, what was
deferred and for which runtime versions. The recipe's own model is small (about 15 s)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers import REPO, latest, manifest, run_cli


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("gpu-targets")
    proc = run_cli(["recipe=gpu-targets", f"model.tokenizer.train_text={REPO / 'data' / 'tokenizer_corpus.txt'}"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Inserted" not in proc.stdout  # ModelOpt's own chatter stays out of the build's output
    d = latest(cwd, "gpu-targets")
    return d, {a["target"]: a for a in manifest(d)["artifacts"]}


def test_checkpoints_pass_through_third_party_loaders(build):
    _, arts = build
    algos = {"trtllm-bf16": None, "trtllm-fp8": "FP8", "trtllm-int4-awq": "W4A16_AWQ"}
    for name, algo in algos.items():
        a = arts[name]
        exp = a["export"]
        assert a["verification"]["status"] == "passed", (name, a["verification"])
        assert exp["quant_algo"] == algo
        assert {"tensorrt-llm", "vllm", "nvidia-modelopt"} <= set(exp["built_for"])
        if algo and importlib.util.find_spec("modelopt") is not None:
            assert exp["loader"]["third_party"] is True and exp["loader"]["name"].startswith("nvidia-modelopt")
            assert "CUDA kernels" in exp["loader"]["not_run"]
    assert "W4A16_AWQ" in arts["trtllm-int4-awq"]["export"]["serve"]["vllm_unsupported"]
    assert arts["trtllm-fp8"]["export"]["serve"]["trtllm-serve"].startswith("trtllm-serve .")


def test_tensorrt_engine_is_deferred_never_claimed(build):
    d, arts = build
    exp = arts["tensorrt"]["export"]
    if importlib.util.find_spec("tensorrt") is None:
        assert exp["engine"] == "deferred" and "no NVIDIA GPU" in exp["engine_reason"]
        assert not list((d / "artifacts" / "tensorrt").glob("*.engine"))
        assert (d / "artifacts" / "tensorrt" / "BUILD_ENGINE.md").is_file()
    assert arts["tensorrt"]["verification"]["status"] == "passed"  # the prepared graph, in onnxruntime


def test_card_says_what_was_built_deferred_and_not_run(build):
    d, _ = build
    card = (d / "README.md").read_text()
    assert "TensorRT engine deferred" in card and "build-engine" in card
    assert card.count("not run here: TensorRT-LLM's and vLLM's CUDA kernels") == 2  # the FP8 and AWQ rows
    assert "trtllm-serve" in card and "vllm serve" in card
