"""The harness tasks' plan remembered across builds: an unchanged plan imports no lm-eval and reads no
document, gives the key a fresh load gives, and is planned again when any input its load read changes
(a data file outside include_path, a YAML it includes, a file a custom_dataset opens); a task whose
reads cannot be watched, and a plan that fails its checks, are never remembered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmbuild.config import HarnessConfig
from tests.conftest import REPO
from tests.evaluation import harness_tasks

pytest.importorskip("lm_eval")

# one build's plan in its own process, as `llmbuild` runs it: the key parts' digest, and whether the
# plan imported the harness
PLAN = """
import json, sys
from llmbuild.config import HarnessConfig
from llmbuild.evaluation import harness
from llmbuild.hashing import sha256_file, sha256_json
cfg = HarnessConfig(**json.loads(sys.argv[2]))
harness.remember_in(sys.argv[1] or None, write=sys.argv[3] == "write")
harness.check(cfg)
print(json.dumps({"key": sha256_json(harness.key_parts(cfg, sha256_file)), "lm_eval": "lm_eval" in sys.modules,
                  "datasets": "datasets" in sys.modules}))
"""


def plan(memo, cfg: dict, cwd: Path, write: bool = True) -> dict:
    p = subprocess.run([sys.executable, "-c", PLAN, str(memo or ""), json.dumps(cfg), "write" if write else "read"],
                       capture_output=True, text=True, cwd=cwd, env=_env())
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def memos(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.exists() else []


def test_an_unchanged_plan_imports_no_harness_and_keys_as_a_fresh_load(tmp_path):
    tasks = harness_tasks.write(tmp_path / "tasks")  # its datasets cache_dir lies inside include_path
    cfg = {"tasks": ["t_mc", "t_gen"], "include_path": str(tasks)}
    memo = tmp_path / "memo"
    fresh = plan(None, cfg, tmp_path)
    assert fresh["lm_eval"] and not memos(memo)
    plan(memo, cfg, tmp_path, write=False)  # a dry run reads the memo, never writes it
    assert not memos(memo)
    first = plan(memo, cfg, tmp_path)
    assert first["lm_eval"] and first["key"] == fresh["key"]
    (rec,) = memos(memo)
    assert str(tasks / "mc.jsonl") in rec["inputs"] and str(tasks / "t_mc.yaml") in rec["inputs"]
    assert not any("/datasets/" in p for p in rec["inputs"]), "the datasets cache is derived, not an input"
    again = plan(memo, cfg, tmp_path)
    assert again == {"key": fresh["key"], "lm_eval": False, "datasets": False}
    # another folder to run from resolves relative paths elsewhere: its own plan
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert plan(memo, cfg, other)["lm_eval"] and len(memos(memo)) == 2


def _task(name: str, body: str) -> str:
    return f"task: {name}\ntest_split: test\n{body}output_type: multiple_choice\n" \
           "doc_to_text: \"{{question}}\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: answer\n" \
           "metric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n"


def _rows(n: int) -> str:
    return "".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                   for q, c, a in harness_tasks.QUESTIONS[:n])


def _layout(tmp_path: Path, data_folder: str) -> tuple[Path, Path]:
    """(include_path folder, a data file of 4 rows in data_folder), both under tmp_path."""
    inc, data = tmp_path / "tasks", tmp_path / data_folder / "mc.jsonl"
    for d in {inc, data.parent}:
        d.mkdir(parents=True)
    data.write_text(_rows(4))
    return inc, data


def _json_task(tmp_path: Path, data: Path) -> str:
    return _task("t", f"dataset_path: json\ndataset_kwargs:\n  cache_dir: {tmp_path / 'cache'}\n"
                      f"  data_files:\n    test: {data}\n")


def _data_outside(tmp_path: Path) -> tuple[Path, Path]:
    """A task whose data_files lie outside include_path."""
    inc, data = _layout(tmp_path, "data")
    (inc / "t.yaml").write_text(_json_task(tmp_path, data))
    return inc, data


def _included_yaml(tmp_path: Path) -> tuple[Path, Path]:
    """A task that includes a YAML outside include_path (here its prompt)."""
    inc, data = _layout(tmp_path, "tasks")
    base = tmp_path / "shared" / "base.yaml"
    base.parent.mkdir()
    base.write_text("doc_to_text: \"Q: {{question}}\"\n")
    (inc / "t.yaml").write_text(f"include: {base}\n" + _json_task(tmp_path, data).replace(
        "doc_to_text: \"{{question}}\"\n", ""))
    return inc, base


def _custom_reader(tmp_path: Path) -> tuple[Path, Path]:
    """A custom_dataset that reads its rows with Python's open, from outside include_path."""
    inc, data = _layout(tmp_path, "rows")
    (inc / "reader.py").write_text(
        "import json\n\n\ndef load(**kwargs):\n    import datasets\n\n"
        f"    with open({str(data)!r}) as f:\n        rows = [json.loads(x) for x in f]\n"
        "    return datasets.DatasetDict({'test': datasets.Dataset.from_list(rows)})\n")
    (inc / "t.yaml").write_text(_task("t", "custom_dataset: !function reader.load\n"))
    return inc, data


@pytest.mark.parametrize("make", [_data_outside, _included_yaml, _custom_reader])
def test_a_changed_input_is_planned_again(tmp_path, make):
    inc, changed = make(tmp_path)
    cfg = {"tasks": ["t"], "include_path": str(inc)}
    memo = tmp_path / "memo"
    plan(None, cfg, tmp_path)  # the datasets cache already holds the data: the load opens no data file
    first = plan(memo, cfg, tmp_path)
    assert plan(memo, cfg, tmp_path) == {**first, "lm_eval": False, "datasets": False}
    assert str(changed) in memos(memo)[0]["inputs"]
    if changed.suffix == ".jsonl":
        changed.write_text(_rows(5))
    else:
        changed.write_text("doc_to_text: \"Question: {{question}}\"\n")
    again = plan(memo, cfg, tmp_path)
    assert again["lm_eval"] and again["key"] != first["key"]
    assert again["key"] == plan(None, cfg, tmp_path)["key"]  # as a plan that remembers nothing keys it
    assert plan(memo, cfg, tmp_path) == {**again, "lm_eval": False, "datasets": False}


def test_a_task_file_added_is_planned_again(tmp_path):
    inc, _ = _data_outside(tmp_path)
    cfg = {"tasks": ["t"], "include_path": str(inc)}
    memo = tmp_path / "memo"
    plan(memo, cfg, tmp_path)
    (inc / "helper.py").write_text("X = 1\n")
    assert plan(memo, cfg, tmp_path)["lm_eval"]


def test_data_the_load_cannot_watch_is_never_remembered(tmp_path):
    """A dataset folder (or a Hub name from the datasets cache) is read by datasets' own resolution:
    its documents are read and digested on every plan instead."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "test.jsonl").write_text(_rows(4))
    inc = tmp_path / "tasks"
    inc.mkdir()
    (inc / "t.yaml").write_text(_task("t", f"dataset_path: {folder}\n"))
    cfg = {"tasks": ["t"], "include_path": str(inc)}
    memo = tmp_path / "memo"
    first = plan(memo, cfg, tmp_path)
    assert not memos(memo)
    (folder / "test.jsonl").write_text(_rows(5))
    again = plan(memo, cfg, tmp_path)
    assert again["lm_eval"] and again["key"] != first["key"]


def test_a_plan_that_fails_its_checks_is_not_remembered(tmp_path):
    from llmbuild.errors import InvalidInput
    from llmbuild.evaluation import harness

    inc, _ = _data_outside(tmp_path)
    memo = tmp_path / "memo"
    harness.remember_in(memo)
    try:
        harness.check(HarnessConfig(tasks=["t"], include_path=str(inc)))
        assert len(memos(memo)) == 1
        with pytest.raises(InvalidInput, match=r"eval.harness.num_fewshot: 9 shots, but task 't' has 3 documents"):
            harness.check(HarnessConfig(tasks=["t"], include_path=str(inc), num_fewshot=9))
        assert len(memos(memo)) == 1
    finally:
        harness.remember_in(None)
