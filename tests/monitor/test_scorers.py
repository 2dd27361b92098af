"""The scorers on real inputs: the nli scorer on a tiny DeBERTa-v2 checker made here (loading, label
mapping, determinism, batching, digest, bad checkers), the lexical scorer, and the judge scorer against
llama-cpp-python's server."""

from __future__ import annotations

import shutil

import pytest

from llmbuild.errors import InvalidInput
from llmbuild.monitor.config import ScorerConfig
from llmbuild.monitor.scorers import make_scorer
from llmbuild.monitor.scorers.judge import PROMPT_VERSION, support_from

PAIRS = [("Paris is the capital of France. The city has about two million inhabitants.", "Paris is in France."),
         ("Madrid is the capital of Spain.", "Lima is the capital of Peru."),
         ("Lima is the capital of Peru and its largest city. " * 30, "Lima is large."),
         ("a b c", "d")]


def nli(checker, **kw):
    return make_scorer(ScorerConfig(name="nli", model=str(checker), **kw))


def test_nli_loads_a_local_checker_deterministically(checker):
    s = nli(checker)
    info = s.info
    assert info["digest"].startswith("sha256:") and len(info["digest"]) == 71
    assert info["entailment_label"] == "entailment" and info["model"] == str(checker)
    a = s.support(PAIRS)
    assert all(0.0 <= x <= 1.0 for x in a)
    assert nli(checker).support(PAIRS) == a  # a fresh load gives the same scores
    one = nli(checker, batch_size=1).support(PAIRS)
    assert one == pytest.approx(a, abs=1e-5)  # the batch a pair lands in does not change its score
    assert nli(checker, entailment_label="2").info["entailment_label"] == "contradiction"
    contra = nli(checker, entailment_label="contradiction").support(PAIRS)
    assert contra != a
    # joined: one text, document + separator + claim, as MiniCheck is fed (a BERT-style checker's pair
    # encoding is the same ids, so compare what is fed, not the scores)
    joined = nli(checker, input="joined")
    assert joined.support(PAIRS) == pytest.approx(a, abs=1e-5)
    p, h = PAIRS[0]
    fed = joined._encode([(p, h)])["input_ids"][0].tolist()
    assert fed == joined.tok(f"{p}{joined.sep}{h}")["input_ids"]
    tmpl = nli(checker, input="template", template="premise: {premise} hypothesis: {hypothesis}").support(PAIRS)
    assert len(tmpl) == 4
    assert nli(checker, dtype="bfloat16").support(PAIRS) == pytest.approx(a, abs=0.05)


def test_nli_chunks_long_passages_in_checker_tokens(checker):
    s = nli(checker, chunk_tokens=64, max_length=128)
    chunks = s.chunks(PAIRS[2][0])
    assert len(chunks) > 2 and all(s._count(c) <= 64 for c in chunks)


def test_nli_digest_follows_the_files(checker, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(checker, copy)
    assert nli(copy).info["digest"] == nli(checker).info["digest"]
    cfg = copy / "config.json"
    cfg.write_text(cfg.read_text().replace('"hidden_act"', '"_note": "edited", "hidden_act"'))
    assert nli(copy).info["digest"] != nli(checker).info["digest"]


def test_nli_bad_checkers(checker, tmp_path, tiny_models):
    with pytest.raises(InvalidInput, match=r"scorer.model: .*nope not found"):
        nli(tmp_path / "nope")
    with pytest.raises(InvalidInput, match="LlamaForCausalLM checkpoint, not a sequence-classification model"):
        nli(tiny_models["LlamaForCausalLM"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="has no config.json"):
        nli(tmp_path / "empty")
    with pytest.raises(InvalidInput, match=r"scorer.entailment_label: 'yes' names no label of the checker "
                                           r"\(0=entailment, 1=neutral, 2=contradiction\)"):
        nli(checker, entailment_label="yes")
    with pytest.raises(InvalidInput, match="needs scorer.revision=<the commit sha"):
        nli("vectara/hallucination_evaluation_model", revision="main")
    with pytest.raises(InvalidInput, match="scorer.model: cannot get vectara/hallucination_evaluation_model@"):
        nli("vectara/hallucination_evaluation_model", revision="0" * 40)  # offline: not in the cache


def test_lexical_names_and_numbers():
    s = make_scorer(ScorerConfig(name="lexical", threshold=0.6))
    p = "Paris is the capital of France. It has 2 million inhabitants."
    got = s.support([(p, "Paris is the capital of France."), (p, "The capital of France is Lyon."),
                     (p, "It has 3 million inhabitants."), (p, "Paris has two million inhabitants.")])
    assert got[0] == 1.0 and got[1] < 0.6 and got[2] < 0.6
    assert s.info["name"] == "lexical"


def test_judge_reads_logprobs_then_the_answer():
    lp = {"content": [{"token": "Yes", "logprob": -0.2231, "top_logprobs": [
        {"token": "Yes", "logprob": -0.2231}, {"token": "No", "logprob": -1.6094}, {"token": "Maybe", "logprob": -3}]}]}
    assert support_from({"logprobs": lp, "message": {"content": "Yes"}}) == pytest.approx(0.8, abs=1e-3)
    assert support_from({"message": {"content": "No."}}) == 0.0
    assert support_from({"message": {"content": " yes, it is"}}) == 1.0
    assert support_from({"message": {"content": "banana"}}) is None


def test_judge_against_llama_cpp_server(llama_server):
    s = make_scorer(ScorerConfig(name="judge", endpoint=llama_server, concurrency=2))
    pairs = PAIRS[:2]
    first = s.support(pairs)
    info = s.info
    assert info["prompt_version"] == PROMPT_VERSION and info["temperature"] == 0 and len(info["prompt_sha256"]) == 64
    again = make_scorer(ScorerConfig(name="judge", endpoint=llama_server)).support(pairs)
    assert first == again  # temperature 0, seed 0: the same answers
    assert s.calls == 2 and s.support(pairs) == first and s.calls == 2  # asked once per pair
    capped = make_scorer(ScorerConfig(name="judge", endpoint=llama_server, max_calls=1))
    with pytest.raises(InvalidInput, match="scorer.max_calls: this run needs 2 judge calls"):
        capped.support(pairs)


def test_judge_unreachable_endpoint():
    from tests.monitor.helpers import free_port

    with pytest.raises(InvalidInput, match=r"scorer.endpoint: http://127.0.0.1:\d+ is unreachable"):
        make_scorer(ScorerConfig(name="judge", endpoint=f"http://127.0.0.1:{free_port()}"))


def test_lexical_normalize_is_squads():
    import re
    import string

    from llmbuild.evaluation.metrics import normalize

    def squad(text):  # SQuAD v1.1's evaluation script, character by character
        text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())

    for text in ("The Capital, of France!", "an apple-a-day; THE end.", "  Théâtre   d'été  ", "a\tb\nthe c", ""):
        assert normalize(text) == squad(text)
