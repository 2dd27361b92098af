"""The model card's text (llmbuild/report/document.py card_text) is byte for byte what
`str(huggingface_hub.ModelCard.from_template(...))` gives, on metadata like the builds' and on the awkward
values YAML quotes, folds or escapes; what the shortcut cannot vouch for goes through ModelCard itself."""

from __future__ import annotations

import math

import pytest
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from llmbuild.report import document

TEMPLATE = document._TEMPLATE_HEADER + "\n{{ body }}\n"


def library_text(data, body: str) -> str:
    return str(ModelCard.from_template(data, template_str=TEMPLATE, body=body))


def result(name: str, metric: str, value, **kw) -> EvalResult:
    return EvalResult(task_type="text-generation", dataset_type=kw.pop("dataset_type", "llmbuild-parity-text"),
                      dataset_name=kw.pop("dataset_name", "parity text data/eval/parity.txt vs source model"),
                      dataset_config=name, metric_type=metric, metric_value=value,
                      metric_name=f"{name} {metric}", **kw)


def build_like(**changes) -> ModelCardData:
    """Metadata shaped as model_card makes it: license, tags, eval results of several artifacts and tasks
    (lm-evaluation-harness ones with metric_args), a fine-tuned Hub base."""
    evals = []
    for art in ("cpu-onnx", "cpu-gguf-q4km", "hf"):
        evals += [result(art, "kl_divergence", 3e-09), result(art, "top1_agreement", 0.998047),
                  result(art, "perplexity_ratio", 1.00012)]
        evals.append(result(art, "acc", 0.583333, dataset_type="demo_facts",
                            dataset_name="demo_facts (lm-evaluation-harness)",
                            metric_args={"num_fewshot": 0, "stderr": 0.0931695, "documents": 28,
                                         "lm_eval_version": "0.4.9", "runtime": "llama.cpp 0.3.36",
                                         "source_value": 0.6}))
    fields = dict(model_name="llmbuild-demo-tiny-llama", license="apache-2.0", base_model="org/base-model",
                  library_name="transformers", pipeline_tag="text-generation",
                  tags=sorted({"llmbuild", "gguf", "onnx", "fp32", "q4_k_m"}), eval_results=evals,
                  datasets=["org/facts"], base_model_relation="finetune")
    fields.update(changes)
    return ModelCardData(**fields)


BODY = ("# llmbuild-demo-tiny-llama\n\nBuilt by llmbuild 0.1.0 from recipe `demo`; build status: **built**.\n\n"
        "| artifact | format |\n|---|---|\n| `cpu-onnx` | onnx |\n\n---\n\nNot front matter: {{ not_jinja }} "
        "{% raw %} é ✓\n\n## License\n\nApache-2.0\n")

AWKWARD = ["yes", "no", "null", "~", "1.0", "0x1F", "2026-12-01", "a: b", "- item", "#hash", " leading space",
           "trailing space ", "quote's \"double\"", "é ✓ 中文", "line one\nline two", "tab\there", "\\backslash",
           "x" * 200, "word " * 40, "%percent @at `tick` *star* &amp !bang |pipe >gt [b] {c}",
           "", "---", "...", "key:\n  nested: fake"]


@pytest.mark.parametrize("data", [
    build_like(),
    build_like(base_model=None, base_model_relation=None, datasets=None),
    build_like(license="other", license_name="llama3.1", license_link="https://llama.meta.com/llama3_1/license/"),
    build_like(eval_results=None, tags=["llmbuild"]),
    *(build_like(model_name=f"m {s}", tags=["llmbuild", s], license_name=s) for s in AWKWARD),
    build_like(eval_results=[result("a", "kld", v) for v in (0, 1, -2, 10 ** 20, 1e-300, 1.5e300, 0.1 + 0.2)]),
    build_like(eval_results=[result("a", "acc", 0.5, metric_args={s: s for s in AWKWARD if s})]),
], ids=lambda d: str(d.model_name)[:24])
def test_the_card_is_what_modelcard_writes(data):
    assert document._reads_back_as_itself(data)  # the shortcut applies
    for body in (BODY, "", "no trailing newline", "\n\nstarts blank\n\n\n"):
        assert document.card_text(data, body) == library_text(data, body)
    assert ModelCard(document.card_text(data, BODY)).data.to_dict() == data.to_dict()


@pytest.mark.parametrize("case", ["nan", "date", "crlf body", "line separator"])
def test_what_the_shortcut_cannot_vouch_for_goes_through_modelcard(case, monkeypatch):
    data, body = build_like(), BODY
    if case == "nan":
        data = build_like(eval_results=[result("a", "kld", math.nan)])
    elif case == "date":  # a value YAML stores as its own type
        import datetime

        data = build_like(released=datetime.date(2026, 12, 1))
    elif case == "crlf body":
        body = BODY.replace("\n", "\r\n")
    elif case == "line separator":  # YAML reads \u2028 and \x85 back as line breaks: the text changes
        data = build_like(model_name="m \u2028sep\x85nel", license_name="a\u2029b bell\x07 del\x7f bom\ufeff")
    calls = []
    from_template = ModelCard.from_template.__func__

    def spy(cls, *a, **kw):
        calls.append(1)
        return from_template(cls, *a, **kw)

    expected = library_text(data, body)
    monkeypatch.setattr(ModelCard, "from_template", classmethod(spy))
    assert document.card_text(data, body) == expected and calls
