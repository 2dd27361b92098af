"""Bad harness and contamination settings fail at plan time with one line and exit 2: an unknown task
(with the closest names), a task whose data is not available offline (naming the task and where it
looked), more shots than the task's few-shot split holds, a sampling task, a missing include_path,
and a contamination n of 0. Two go through the CLI as a user runs it (exit code, one line, nothing
built); the rest call the plan-time check itself (indexing the harness's registry takes seconds)."""

from __future__ import annotations

import pytest

from llmbuild.config import EvalConfig, HarnessConfig
from llmbuild.errors import InvalidInput
from llmbuild.stages import evaluate
from tests.evaluation import harness_tasks
from tests.helpers import corpus_override, one_line_error, run_cli

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-harness")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return harness_tasks.write(tmp_path_factory.mktemp("tasks") / "tasks")


def bad_cli(cwd, args, *needles, env=None) -> str:
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.gguf8", *args], cwd, env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    line = one_line_error(proc)
    assert all(n in line for n in needles), line
    assert not list((cwd / "outputs" / "tiny").glob("2*")), "a failed plan leaves no build folder"
    assert not list((cwd / "outputs" / ".cache").glob("stages-*/*")), "and runs no stage"
    return line


def bad(harness: HarnessConfig, *needles) -> str:
    with pytest.raises(InvalidInput) as e:
        evaluate.check(EvalConfig(harness=harness))
    line = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in line and all(n in line for n in needles), line
    return line


def test_unknown_task_lists_close_names():
    bad(HarnessConfig(tasks=["arc_easz"]), "eval.harness.tasks[0]", "unknown task 'arc_easz'", "close names: arc_easy")


def test_registry_task_without_its_dataset_offline(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")  # surely not there
    line = bad(HarnessConfig(tasks=["arc_easy"]), "eval.harness.tasks[0]", "'arc_easy'", "not available offline",
               "allenai/ai2_arc", str(tmp_path / "hf-datasets"), "HF_DATASETS_OFFLINE=1")
    assert "arc_easy.yaml" in line


def test_more_shots_than_the_split_holds(cwd, tasks):
    # t_mc has 6 documents in its only split: 5 can be shown beside the one evaluated
    bad_cli(cwd, ["eval.harness.tasks=[t_mc]", f"eval.harness.include_path={tasks}", "eval.harness.num_fewshot=6"],
            "eval.harness.num_fewshot", "6 shots", "'t_mc' has 5 documents", "split 'test'")
    evaluate.check(EvalConfig(harness=HarnessConfig(tasks=["t_mc"], include_path=str(tasks), num_fewshot=5)))  # fits


def test_contamination_n_of_zero(cwd):
    bad_cli(cwd, ["eval.contamination.n=0"], "eval.contamination.n", "at least 1 word")


def test_local_task_whose_file_is_missing(tmp_path):
    (tmp_path / "t_lost.yaml").write_text(f"""task: t_lost
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tmp_path / 'gone.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{q}}}}"
doc_to_choice: "{{{{c}}}}"
doc_to_target: 0
""")
    bad(HarnessConfig(tasks=["t_lost"], include_path=str(tmp_path)), "eval.harness.tasks[0]", "'t_lost'",
        "not available offline", "gone.jsonl")


def test_sampling_task(tasks, tmp_path):
    y = (tasks / "t_gen.yaml").read_text().replace("do_sample: false", "do_sample: true, temperature: 0.7")
    (tmp_path / "t_sample.yaml").write_text(y.replace("task: t_gen", "task: t_sample"))
    bad(HarnessConfig(tasks=["t_sample"], include_path=str(tmp_path)), "'t_sample' samples", "greedily")


def test_missing_include_path_and_bad_numbers(tmp_path):
    bad(HarnessConfig(tasks=["t_mc"], include_path=str(tmp_path / "nowhere")), "eval.harness.include_path", "nowhere")
    bad(HarnessConfig(tasks=["t_mc", "t_mc"]), "eval.harness.tasks", "twice")
    bad(HarnessConfig(tasks=["t_mc"], limit=-1), "eval.harness.limit")
    bad(HarnessConfig(tasks=["t_mc"], max_drop={"acc": -0.1}), "eval.harness.max_drop.acc")
