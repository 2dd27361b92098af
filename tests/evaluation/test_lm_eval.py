"""llmbuild's multiple-choice scorer gives lm-evaluation-harness's numbers: the harness itself
(`lm_eval.simple_evaluate`, model "hf") runs its own MMLU and HellaSwag task configs, pointed at the
shipped sample files, on a tiny checkpoint; the same files are scored by llmbuild on the same model in
PyTorch (the evaluate stage's source path), request by request and in acc/acc_norm."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbuild.evaluation import data
from llmbuild.evaluation import multiple_choice as mc
from tests.conftest import REPO

lm_eval = pytest.importorskip("lm_eval")

SAMPLES = REPO / "data" / "eval"


def task_yamls(root: Path) -> Path:
    """The harness's own task configs, with only the data location changed (and MMLU's per-subject
    description taken from each record, since the sample mixes subjects in one file); the datasets
    cache stays in the test's folder."""
    import lm_eval.tasks

    tasks = Path(lm_eval.tasks.__file__).parent
    root.mkdir()
    (root / "mmlu.yaml").write_text(f"""include: {tasks}/mmlu/default/_default_template_yaml
task: llmbuild_mmlu_sample
dataset_path: json
dataset_name: null
dataset_kwargs:
  cache_dir: {root / 'datasets'}
  data_files:
    test: {SAMPLES / 'mmlu-sample.jsonl'}
test_split: test
fewshot_split: test
description: "The following are multiple choice questions (with answers) about {{{{subject.replace('_', ' ')}}}}.\\n\\n"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")
    (root / "hellaswag.yaml").write_text(f"""include: {tasks}/hellaswag/hellaswag.yaml
task: llmbuild_hellaswag_sample
tag: []
dataset_path: json
dataset_name: null
dataset_kwargs:
  cache_dir: {root / 'datasets'}
  data_files:
    validation: {SAMPLES / 'hellaswag-sample.jsonl'}
training_split: null
validation_split: validation
""")
    return root


def test_scorer_matches_lm_evaluation_harness(tiny_models, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    from llmbuild.evaluation.torch_runtime import TorchModel

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir = tiny_models["LlamaForCausalLM"]
    names = {"llmbuild_mmlu_sample": "mmlu", "llmbuild_hellaswag_sample": "hellaswag"}
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=list(names),
                                  task_manager=TaskManager(include_path=str(task_yamls(tmp_path / "tasks"))),
                                  batch_size=1, device="cpu", log_samples=True, num_fewshot=0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = TorchModel(model_dir)
    for task, fmt in names.items():
        docs = [mc.DOCS[fmt](r) for r in data.read_mc(SAMPLES / f"{fmt}-sample.jsonl", fmt, "t")]
        samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
        assert len(samples) == len(docs)
        ours = []
        for doc, s in zip(docs, samples):
            # the same context and continuations ...
            assert [a[0] for a in s["arguments"]] == [doc.context] * len(doc.choices)
            assert [a[1] for a in s["arguments"]] == [" " + c for c in doc.choices]
            reqs = mc.requests(doc, tok, 256)
            lls = [mc.loglikelihood(model.logits([r["ids"]])[0], r["ids"], r["n_cont"]) for r in reqs]
            # ... the same log-likelihoods (float32 summation order aside) ...
            assert lls == pytest.approx([r[0][0] for r in s["resps"]], abs=1e-3)
            ours.append(mc.score(doc, lls))
            assert (ours[-1]["acc"], ours[-1]["acc_norm"]) == (s["acc"], s["acc_norm"])
        # ... and the same aggregate figures
        r = res["results"][task]
        assert sum(o["acc"] for o in ours) / len(ours) == pytest.approx(r["acc,none"])
        assert sum(o["acc_norm"] for o in ours) / len(ours) == pytest.approx(r["acc_norm,none"])
