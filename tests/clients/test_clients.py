"""Every artifact as shipped, through the clients its users run: one tiny build (onnx, gguf and the hf
target) whose folders are then loaded by onnxruntime-genai, llama-cpp-python (and its server, started from
SERVE.md's line), transformers (the hf folder and the GGUF loader), published to an offline stand-in of the
Hub, re-verified after tampering, and whose ML-BOM and card validate."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO, corpus_override, latest, manifest, run_cli

# the tiny recipe plus the hf target; onnxruntime-genai's tokenizer is held to the source by the assertions
# below, not by the gate, so the build itself passes whatever that version of the tokenizers does
ARGS = ["recipe=tiny", corpus_override(), "+targets.hf16.backend=hf", "+targets.hf16.dtype=bfloat16",
        "+targets.hf16.gates.min_client_agreement=1.0", "+targets.onnx32.gates.min_client_agreement=0"]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("clients")
    proc = run_cli(ARGS, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return latest(cwd)


def art(m: dict, name: str) -> dict:
    return next(a for a in m["artifacts"] if a["target"] == name)


def source_ids(d, texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(d / "artifacts" / "hf16"))
    return [tok(t).input_ids for t in texts]


def golden_questions():
    return [json.loads(x)["prompt"] for x in (REPO / "data/finetune/golden.jsonl").read_text().splitlines() if x.strip()]


def test_onnx_folder_layout_and_genai(build):
    """onnxruntime-genai opens the folder as shipped (genai_config.json) and generates what onnxruntime
    does on the same ids; the graph is where transformers.js and optimum look for it."""
    import onnxruntime_genai as og

    from llmbuild.targets import onnx as O

    d = build / "artifacts" / "onnx32"
    rec = art(manifest(build), "onnx32")["export"]
    assert rec["file"] == "onnx/model.onnx" and (d / "onnx" / "model.onnx").is_file()
    assert not (d / "model.onnx").exists()
    cfg = json.loads((d / "genai_config.json").read_text())
    assert cfg["model"]["decoder"]["filename"] == "onnx/model.onnx" and cfg["search"]["past_present_share_buffer"] is False
    model = og.Model(str(d))
    ids = source_ids(build, ["The capital of France is"])[0]
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + 8, min_length=len(ids) + 8)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    out = []
    while not gen.is_done():
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    assert out == O.BACKEND.generate(d, rec, ids, 8, None)


def test_client_stage_measures_each_client(build):
    """The client figures are those clients' own: the tokenization agreement is what each tokenizer gives
    on the golden prompts, and the card shows them beside the id-fed ones."""
    import onnxruntime_genai as og

    m = manifest(build)
    questions = golden_questions()
    src = source_ids(build, questions)
    tok = og.Tokenizer(og.Model(str(build / "artifacts" / "onnx32")))
    genai_agree = sum(list(map(int, tok.encode(q))) == s for q, s in zip(questions, src))
    for name, client, agree in (("onnx32", "onnxruntime-genai", genai_agree), ("gguf8", "llama-cpp-python", None),
                                ("hf16", "transformers", len(questions))):
        c = art(m, name)["client"]
        assert c["client"] == client and c["status"] == "passed", c
        t = c["tokenization"]
        assert t["golden_prompts"] == len(questions) and t["template"] == "plain"
        if agree is not None:
            assert t["agree"] == agree
        assert len(t["differ"]) == min(3, len(questions) - t["agree"])
        assert 0 <= c["golden"]["exact_match"] <= 1 and c["tasks"]["mmlu-sample"]["requests"] == 16
        assert c["speed"]["gen_tokens_per_s"] > 0
    import llama_cpp

    llm = llama_cpp.Llama(str(next((build / "artifacts" / "gguf8").glob("*.gguf"))), verbose=False)
    gguf_agree = sum(llm.tokenize(q.encode(), add_bos=True) == s for q, s in zip(questions, src))
    llm.close()
    assert art(m, "gguf8")["client"]["tokenization"]["agree"] == gguf_agree
    # multiple choice: onnxruntime-genai's encode adds no BOS where the source's tokenizer does, so none of
    # its requests are the source's, and the first one is shown with where it differs
    mc_onnx, mc_hf = (art(m, n)["client"]["tasks"]["mmlu-sample"] for n in ("onnx32", "hf16"))
    bos = tok.encode("x")[0] != src[0][0]
    assert (mc_onnx["requests_agree"] == 0) == bos and mc_hf["requests_agree"] == 16 and mc_hf["differ"] == []
    if bos:
        d = mc_onnx["differ"][0]
        assert d["index"] == 0 and d["position"] == 0 and d["source_tokens"] == d["client_tokens"] + 1
    card = (build / "README.md").read_text()
    assert "### As users run it" in card and "| `hf16` | transformers" in card
    assert ("`onnx32` mmlu-sample: 16 of 16 multiple-choice requests" in card) == bos
    ev = json.loads((build / "eval.json").read_text())
    assert ev["artifacts"]["gguf8"]["client"]["tokenization"]["agree"] == gguf_agree


def test_client_gates():
    """min_client_agreement (when set) bounds the share of golden prompts tokenized as the source, and
    min_golden_em also bounds the golden exact match the client gives."""
    from llmbuild.evaluation import clients

    rec = {"tokenization": {"share": 0.5}, "golden": {"exact_match": 0.25}}
    assert clients.apply_gates(rec, {}) == []  # reported, not gated, unless the recipe asks
    got = {g["gate"]: g for g in clients.apply_gates(rec, {"min_client_agreement": 1.0})}
    assert got["min_client_agreement"]["limit"] == 1.0 and not got["min_client_agreement"]["passed"]
    got = {g["gate"]: g for g in clients.apply_gates(rec, {"min_client_agreement": 0.5, "min_golden_em": 0.3})}
    assert got["min_client_agreement"]["passed"] and not got["min_golden_em"]["passed"]
    assert got["min_golden_em"]["figure"] == "client.golden.exact_match"


def test_client_gate_fails_the_build_after_the_card(tmp_path):
    """A client figure below its gate: exit 4, and the card's client table says which gate failed."""
    from tests.helpers import one_line_error

    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32", "+targets.gguf8.gates.min_golden_em=0.5"],
                   tmp_path)
    assert proc.returncode == 4 and "min_golden_em" in one_line_error(proc)
    d = next((tmp_path / "outputs" / "tiny").glob("2*"))
    c = art(manifest(d), "gguf8")["client"]
    assert c["status"] == "failed" and any(g["figure"] == "client.golden.exact_match" and not g["passed"]
                                           for g in c["gates"])
    assert "min_golden_em 0.5 **FAILED**" in (d / "README.md").read_text().split("### As users run it")[1]


def test_fixture_build_records_each_client_gate(build):
    m = manifest(build)
    for name in ("onnx32", "gguf8", "hf16"):
        c = art(m, name)["client"]
        gates = [x for x in c["gates"] if x["gate"] == "min_client_agreement"]
        if name == "gguf8":
            assert gates == []  # not set: reported only
            continue
        assert gates[0]["value"] == c["tokenization"]["share"] and gates[0]["limit"] == (0 if name == "onnx32" else 1.0)


def test_hf_folder_loads_and_validates_as_a_hub_repo(build):
    """from_pretrained reads the folder as shipped and computes what the source computes (bf16 weights),
    and its README.md is a model card whose metadata the Hub accepts."""
    import torch
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results
    from transformers import AutoModelForCausalLM

    d = build / "artifacts" / "hf16"
    m = manifest(build)
    model = AutoModelForCausalLM.from_pretrained(str(d))
    assert model.dtype == torch.bfloat16
    src = AutoModelForCausalLM.from_pretrained(str(build.parents[2] / m["inputs"]["model_dir"]), dtype=torch.float32)
    ids = torch.tensor([source_ids(build, ["The capital of France is Paris."])[0]])
    with torch.no_grad():
        a, b = model.float()(ids).logits, src(ids).logits
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9 and (a - b).abs().max() < 0.5
    from llmbuild.report.card_checks import problems

    assert problems((d / "README.md").read_text()) == []
    card = ModelCard.load(d / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["license"] == "apache-2.0"
    assert "datasets" not in data and "base_model" not in data  # a seeded model: no Hub base, no local paths
    name, results = model_index_to_eval_results(data["model-index"])
    kld = [r for r in results if r.metric_type == "kl_divergence"]
    assert kld and all(0 < r.metric_value < 1e-3 for r in kld)  # small KL figures kept, not rounded to 0.0
    assert {r.dataset_config for r in results} == {"hf16"}
    assert "artifacts/hf16" not in card.text  # the folder's own card speaks of the folder
    assert (d / "LICENSE").is_file() and (d / "generation_config.json").is_file()
    tok_cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert not isinstance(tok_cfg.get("extra_special_tokens"), list) and "local_files_only" not in tok_cfg


def test_build_card_metadata(build):
    from huggingface_hub import ModelCard

    from llmbuild.report.card_checks import problems

    assert problems((build / "README.md").read_text()) == []
    data = ModelCard.load(build / "README.md").data.to_dict()
    assert data["library_name"] == "transformers"  # the build has a transformers folder
    values = [mt["value"] for r in data["model-index"][0]["results"] for mt in r["metrics"]
              if mt["type"] == "kl_divergence"]
    assert values and all(v > 0 for v in values)


def test_bom_validates(build):
    """bom.cdx.json is CycloneDX 1.6 by the library's own schema validator, and holds every artifact file's
    digest from the manifest."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = (build / "bom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    files = {c["name"]: c["hashes"][0]["content"] for a in bom["components"] for c in a.get("components", [])}
    for a in manifest(build)["artifacts"]:
        for f in a["files"]:
            assert files[f["path"]] == f["sha256"]
    types = {c["type"] for c in bom["components"]}
    assert "machine-learning-model" in types
    assert any(t["name"] == "llmbuild" for t in bom["metadata"]["tools"]["components"])


def _verify(args, cwd=None):
    return subprocess.run([sys.executable, "-m", "llmbuild.verify_build", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)


def test_verify_rehashes_and_reruns(build, tmp_path):
    ok = _verify([str(build), "--rerun"], cwd=build.parents[2])
    assert ok.returncode == 0, ok.stderr
    assert "re-verified" in ok.stdout
    copy = tmp_path / "b"
    shutil.copytree(build, copy, symlinks=True)
    shutil.copyfile(copy / "manifest.json", copy / "manifest.json.bak")
    gguf = next((copy / "artifacts" / "gguf8").glob("*.gguf"))
    data = bytearray(gguf.read_bytes())
    data[-100] ^= 0xFF  # one weight byte
    gguf.unlink()
    gguf.write_bytes(bytes(data))
    bad = _verify([str(copy)])
    assert bad.returncode == 4, bad.stderr
    err = [x for x in bad.stderr.splitlines() if x.strip()]
    assert len(err) == 1 and gguf.name in err[0] and "sha256" in err[0] and "Traceback" not in bad.stderr
    assert _verify([str(tmp_path)]).returncode == 2


def test_publish_uploads_through_the_hub_api(build, tmp_path):
    """llmbuild-publish against a stand-in of the Hub's HTTP API: the repository is created and the folder
    arrives byte for byte in one commit; no token is needed or sent."""
    from tests.clients.fake_hub import FakeHub

    with FakeHub() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "0",
               "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_TOKEN", None)
        proc = subprocess.run([sys.executable, "-m", "llmbuild.publish", str(build), "--repo", "acme/tiny",
                               "--artifact", "hf16"], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        repo = hub.repos["acme/tiny"]
        d = build / "artifacts" / "hf16"
        assert set(repo["files"]) == {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
        for path, data in repo["files"].items():
            assert data == (d / path).read_bytes()
        assert hub.validated == [[]]  # the README.md was checked as the Hub checks it, and passed
        assert len(repo["commits"]) == 1 and not any("authorization" in {k.lower() for k in h}
                                                     for _, _, h in hub.requests)
        bad = subprocess.run([sys.executable, "-m", "llmbuild.publish", str(build), "--repo", "acme/tiny",
                              "--artifact", "nope"], capture_output=True, text=True, env=env, timeout=300)
        assert bad.returncode == 2 and "--artifact" in bad.stderr


def test_publish_refuses_what_the_license_forbids_redistributing(build, tmp_path):
    """The same build under a license whose policy fails once the weights are redistributed: exit 3 before
    any request."""
    from tests.clients.fake_hub import FakeHub

    copy = tmp_path / "b"
    shutil.copytree(build, copy, symlinks=True)
    m = manifest(copy)
    m["config"]["license"]["id"] = "cc-by-sa-4.0"  # share-alike: the commercial policy refuses redistribution
    (copy / "manifest.json").write_text(json.dumps(m))
    with FakeHub() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "0"}
        proc = subprocess.run([sys.executable, "-m", "llmbuild.publish", str(copy), "--repo", "acme/tiny"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 3, proc.stderr
        assert "redistribut" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert hub.requests == []


def test_serve_md_llama_cpp_server_answers_the_golden_set(build):
    """SERVE.md's python -m llama_cpp.server line starts as written (on a free port) and answers the golden
    set as the client stage measured it."""
    pytest.importorskip("uvicorn")
    from tests.monitor.helpers import free_port, post, stop, wait_http

    text = (build / "SERVE.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("python -m llama_cpp.server"))
    port = free_port()
    argv = shlex.split(line.replace("--port 8080", f"--port {port}"))
    proc = subprocess.Popen([sys.executable, *argv[1:]], cwd=build, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc=proc)
        c = art(manifest(build), "gguf8")["client"]
        outs = []
        for q in golden_questions()[:8]:
            code, body = post(f"http://127.0.0.1:{port}/v1/completions",
                              {"prompt": q, "max_tokens": 4, "temperature": 0, "repeat_penalty": 1.0, "top_k": 1})
            assert code == 200
            outs.append(json.loads(body)["choices"][0]["text"])
        examples = {e["prompt"]: e["output"] for e in c["golden"]["examples"]}
        for q, o in zip(golden_questions()[:5], outs):
            assert o.strip() == examples[q]
    finally:
        stop(proc)


def test_transformers_gguf_loader(build):
    """transformers' own GGUF reader (from_pretrained(gguf_file=)) dequantizes the shipped file into a model
    that computes what the q8_0 GGUF does in llama.cpp."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmbuild.targets import gguf as G

    d = build / "artifacts" / "gguf8"
    f = next(d.glob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=f.name, dtype=torch.float32)
    ids = source_ids(build, ["The capital of France is Paris."])[0]
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].numpy()
    lc = G.BACKEND.run_logits(d, art(manifest(build), "gguf8")["export"], [ids])[0]
    assert np.mean(hf.argmax(-1) == lc.argmax(-1)) > 0.9 and np.abs(hf - lc).max() < 0.5


def test_llama_cpp_built_in_chat_format_renders_what_create_chat_completion_sends(build):
    """A GGUF whose template llama-cpp-python recognizes is chatted with through its built-in formatter
    (chatml, llama-3, mistral-instruct): the client stage's prompt ids are the ones create_chat_completion
    evaluates."""
    from llmbuild.targets import gguf_client

    d = build / "artifacts" / "gguf8"
    rec = {"file": next(d.glob("*.gguf")).name}
    s = gguf_client.open_session(d, rec, 2)
    try:
        for fmt in gguf_client.BUILT_IN_FORMATTERS:
            s.llm.chat_format = fmt
            messages = [{"role": "user", "content": "What is the capital of France?"}]
            ids = s.chat_ids(messages)
            s.llm.reset()
            s.llm.create_chat_completion(messages, max_tokens=1, temperature=0.0)
            assert list(s.llm.input_ids[: len(ids)]) == ids, fmt
    finally:
        s.close()
