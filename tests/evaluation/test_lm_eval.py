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
                                  task_manager=TaskManager(include_path=str(task_yamls(tmp_path / "tasks")), include_defaults=False),
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


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_builtin_scorer_matches_the_harness_through_the_adapters(tiny_models, tmp_path, monkeypatch, runtime):
    """The built-in MMLU/HellaSwag scorer and the harness's own task configs, the latter through
    llmbuild's lm_eval adapter, on the same runtime: the same log-likelihood per request, the same
    acc and acc_norm. This is why both are kept (see llmbuild/evaluation/__init__.py)."""
    from transformers import AutoTokenizer

    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.config import HarnessConfig
    from llmbuild.evaluation import harness
    from llmbuild.evaluation.runtimes import artifact_runtime, source_runtime
    from llmbuild.evaluation.torch_runtime import TorchModel
    from llmbuild.targets import onnx
    from llmbuild.targets.common import ArtifactMeta

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir = tiny_models["LlamaForCausalLM"]
    if runtime == "torch":
        rt = source_runtime(TorchModel(model_dir), 2)
    else:
        out = tmp_path / "onnx"
        out.mkdir()
        rec = onnx.export(open_checkpoint(model_dir), onnx.Options(), out, ArtifactMeta(name="t"), lambda *a: None)
        rt = artifact_runtime(onnx.BACKEND, out, rec, threads=2)
    names = {"llmbuild_mmlu_sample": "mmlu", "llmbuild_hellaswag_sample": "hellaswag"}
    cfg = HarnessConfig(tasks=list(names), include_path=str(task_yamls(tmp_path / "tasks")), num_fewshot=0,
                        bootstrap_iters=10)
    res = harness.evaluate(harness.make_lm(rt, model_dir, cfg), cfg, log_samples=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    for task, fmt in names.items():
        docs = [mc.DOCS[fmt](r) for r in data.read_mc(SAMPLES / f"{fmt}-sample.jsonl", fmt, "t")]
        samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
        ours = []
        for doc, s in zip(docs, samples):
            reqs = mc.requests(doc, tok, 256)
            lls = [mc.loglikelihood(lg, r["ids"], r["n_cont"]) for r, lg in zip(reqs, rt.logits([r["ids"] for r in reqs]))]
            assert lls == pytest.approx([r[0][0] for r in s["resps"]], rel=1e-6)
            ours.append(mc.score(doc, lls))
        m = res["tasks"][task]["metrics"]
        assert sum(o["acc"] for o in ours) / len(ours) == pytest.approx(m["acc"]["value"])
        assert sum(o["acc_norm"] for o in ours) / len(ours) == pytest.approx(m["acc_norm"]["value"])
