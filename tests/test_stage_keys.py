"""Stage keys are serialized from the stages' declarations (llmbuild/declaration.py): every declared input
enters its stage's key, nothing undeclared does, files count by content; and every check the recipe alone
allows fails in `make_plan`, before any stage (the planner runs in-process here: no model is made)."""

from __future__ import annotations

import shutil

import pytest

from llmbuild.declaration import File, Pending, Ref, stage_key
from llmbuild.errors import InvalidInput
from llmbuild.hashing import sha256_file
from tests.helpers import REPO, corpus_override

DATA = REPO / "data" / "finetune"
FINETUNE = ["finetune=lora", f"finetune.golden={DATA / 'golden.jsonl'}",
            f"finetune.datasets=[{{path: {DATA / 'facts-train.jsonl'}, shape: chat, license: cc0-1.0}}]"]


@pytest.fixture(autouse=True)
def _recipes(monkeypatch):
    monkeypatch.setenv("LLMBUILD_RECIPES", str(REPO / "tests" / "recipes"))
    monkeypatch.chdir(REPO)  # the tiny recipe names its data relative to the checkout


def plan(*overrides: str):
    from llmbuild import cli
    from llmbuild.config import typed_config
    from llmbuild.plan import make_plan

    return make_plan(typed_config(cli.compose(cli.find_recipe("tiny"), ["recipe=tiny", corpus_override(),
                                                                         *overrides])))


def upstream(ref: Ref):
    """What an upstream stage would publish: a value per (stage, field), as a build's outputs give."""
    return f"{ref.stage}/{ref.field}"


def keys(p, value_of=upstream) -> dict[str, str]:
    return {st.name: stage_key(st, value_of, lambda path: sha256_file(path)) for st in p}


def leaves(obj, path=()):
    """(path, value) of every declared input: plain values, Ref and File placeholders."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, (*path, k))
    elif isinstance(obj, (list, tuple)) and obj:
        for i, v in enumerate(obj):
            yield from leaves(v, (*path, i))
    else:
        yield path, obj


def replaced(obj, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        return {**obj, head: replaced(obj[head], rest, value)}
    out = list(obj)
    out[head] = replaced(obj[head], rest, value)
    return out


def test_every_declared_input_enters_the_key(tmp_path):
    """For every stage of a build with every stage kind, changing any one declared input (a recipe value,
    an upstream output, a file's content) changes that stage's key."""
    import dataclasses

    p = plan(*FINETUNE)
    assert {st.role for st in p} == {"acquire", "license", "finetune", "reference", "evalref", "contamination",
                                     "export", "verify", "evaluate", "client"}
    other = tmp_path / "other.txt"
    other.write_text("other content\n")
    for st in p:
        base = stage_key(st, upstream, sha256_file)
        found = list(leaves(st.inputs))
        assert found, st.name
        for path, value in found:
            if isinstance(value, Ref):
                changed = stage_key(st, lambda r, value=value: upstream(r) + ("'" if r == value else ""), sha256_file)
            elif isinstance(value, File):
                changed = stage_key(dataclasses.replace(st, inputs=replaced(st.inputs, path, File(other))),
                                    upstream, sha256_file)
            else:
                new = "changed" if value != "changed" else "changed again"
                changed = stage_key(dataclasses.replace(st, inputs=replaced(st.inputs, path, new)),
                                    upstream, sha256_file)
            assert changed != base, (st.name, path)
        assert stage_key(dataclasses.replace(st, version=st.version + 1), upstream, sha256_file) != base
        assert stage_key(dataclasses.replace(st, kind=st.kind + "x"), upstream, sha256_file) != base


def test_a_change_moves_the_keys_that_declare_it_and_no_other():
    base = keys(plan())
    q4 = keys(plan("targets.gguf8.quant=q4_0"))
    assert {n for n in base if base[n] != q4[n]} == {"export:gguf8", "license"}  # the license facts name precisions
    # gates are applied to the records afterwards: no stage reruns for a new limit
    assert keys(plan("+targets.gguf8.gates={min_top1: 0.5}")) == base
    threads = keys(plan("eval.threads=1"))
    assert {n for n in base if base[n] != threads[n]} == {"evalref", "evaluate:onnx32", "evaluate:gguf8",
                                                          "client:onnx32", "client:gguf8"}
    probes = keys(plan("eval.max_tokens=8"))
    assert {n for n in base if base[n] != probes[n]} == {"reference"}


def test_files_count_by_content_not_by_path(tmp_path):
    moved = tmp_path / "golden.jsonl"
    shutil.copy(DATA / "golden.jsonl", moved)
    base = keys(plan(*FINETUNE))
    assert keys(plan(*FINETUNE[:1], f"finetune.golden={moved}", *FINETUNE[2:])) == base
    moved.write_text(moved.read_text().replace("?", " ?", 1))
    edited = keys(plan(*FINETUNE[:1], f"finetune.golden={moved}", *FINETUNE[2:]))
    assert {n for n in base if base[n] != edited[n]} == {"finetune"}


def test_a_key_before_its_upstream_ran_is_pending():
    """What a dry run reports as "depends on an earlier stage": the stage whose output the key needs."""
    p = plan(*FINETUNE)

    def nothing_ran(ref):
        raise Pending(ref.stage)

    with pytest.raises(Pending) as e:
        stage_key(p["reference"], nothing_ran, sha256_file)
    assert e.value.stage == "finetune"
    assert p["verify:gguf8"].upstream() == ["export:gguf8", "reference"]
    stage_key(p["contamination"], nothing_ran, sha256_file)  # data files only: known before anything ran


@pytest.mark.parametrize("override, key", [
    ("targets.gguf8.quant=q9_9", "targets.gguf8.quant"),
    ("+targets.gguf8.imatrix=no/such/imatrix.gguf", "targets.gguf8.imatrix"),
    ("targets.onnx32.dtype=fp12", "targets.onnx32.dtype"),
    ("+targets.hf16={backend: hf, dtype: float8}", "targets.hf16.dtype"),
    ("+targets.trt={backend: trtllm, quant: int3}", "targets.trt.quant"),
    ("+targets.trt={backend: trtllm, quant: int4_awq, calibration_text: no/such/text.txt}",
     "targets.trt.calibration_text"),
    ("+targets.trt={backend: tensorrt, precision: fp7}", "targets.trt.precision"),
    ("eval.harness.tasks=[no_such_task_anywhere]", "eval.harness.tasks"),
    ("eval.tasks=[{name: m, path: no/such/tasks.jsonl, format: mmlu}]", "eval.tasks[0].path"),
    ("eval.contamination.n=0", "eval.contamination.n"),
    ("finetune.lr=0", "finetune.lr"),
    ("finetune.datasets=[{path: no/such/data.jsonl, shape: chat, license: cc0-1.0}]", "finetune.datasets[0].path"),
    ("license.id=llama-3.7-super", "license.id"),
    ("license/policy=anything-goes", "license"),
])
def test_every_check_the_recipe_allows_runs_in_the_planner(override, key):
    """With a Hub source that no cache holds: the error names the key before anything is acquired."""
    extra = [*FINETUNE] if override.startswith("finetune.") else []
    with pytest.raises(InvalidInput) as e:
        plan("model.source=hub", "model.repo_id=acme/not-downloaded", *extra, override)
    assert str(e.value).startswith(key), str(e.value)


def test_a_stage_reads_only_the_outputs_it_declares():
    """What a run function reads of an upstream stage is in its key: reading an undeclared one is refused."""
    from llmbuild.declaration import Output, StageContext

    p = plan()
    outputs = {n: Output("d", {"loader": "x"}) for n in ("acquire", "reference", "export:gguf8", "export:onnx32")}
    ctx = StageContext(key="k", outputs=outputs, stat_cache=None, cache_root=None, build_dir=None, dry=False,
                       warnings=[], progress=None, reads=tuple(p["verify:gguf8"].upstream()))
    assert ctx.output("export:gguf8").digest == "d" and ctx.value("reference", "digest") == "d"
    with pytest.raises(RuntimeError, match="export:onnx32"):
        ctx.output("export:onnx32")
