"""Real chat templates (llama.cpp's models/templates/) carried into the GGUF (tokenizer.chat_template) and the ONNX
folder (tokenizer_config.json's chat_template), and rendered the same from each: by transformers' sandboxed
apply_chat_template from the source folder, from the GGUF (gguf_file=) and from the ONNX folder without its
chat_template.jinja, and by llama-cpp-python from the GGUF's metadata, as create_chat_completion does."""

from __future__ import annotations

import json
import shutil

import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.targets import onnx as O
from llmbuild.targets.common import ArtifactMeta
from tests.conftest import make_tiny
from tests.tokenizers.helpers import export_gguf, hf_chat_ids, llama_chat_ids, llama_vocab, tiny_model, vocab_dir

TEMPLATES = ["meta-llama-Llama-3.1-8B-Instruct", "Qwen-Qwen2.5-7B-Instruct", "microsoft-Phi-3.5-mini-instruct",
             "google-gemma-2-2b-it"]
CHAT = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"}]


def template(name: str) -> str:
    return (vocab_dir() / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


def render(tok) -> str:
    return tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("chat") / "m")


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_round_trips(base, tmp_path, name):
    import gguf
    from transformers import AutoTokenizer

    text = template(name)
    d = tmp_path / "m"
    shutil.copytree(base, d)
    (d / "chat_template.jinja").write_text(text, encoding="utf-8")
    expected = render(AutoTokenizer.from_pretrained(d))
    assert "Italy" in expected

    rec = export_gguf(d, tmp_path / "gguf")
    fields = gguf.GGUFReader(tmp_path / "gguf" / rec["file"]).fields
    assert fields["tokenizer.chat_template"].contents() == text
    assert render(AutoTokenizer.from_pretrained(tmp_path / "gguf", gguf_file=rec["file"])) == expected

    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    O.export(open_checkpoint(d), O.Options(), onnx_dir, ArtifactMeta(name="tiny"), lambda *a: None)
    assert json.loads((onnx_dir / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"] == text
    (onnx_dir / "chat_template.jinja").unlink()  # what transformers 4 and transformers.js read: the config
    assert render(AutoTokenizer.from_pretrained(onnx_dir)) == expected

    pytest.importorskip("llama_cpp")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = llama_vocab(tmp_path / "gguf" / rec["file"])
    fmt = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"], bos_token="<s>", eos_token="</s>")
    assert fmt(messages=CHAT).prompt == expected


@pytest.mark.llamacpp
@pytest.mark.parametrize("vocab, name", [
    ("phi-3", "microsoft-Phi-3.5-mini-instruct"),
    pytest.param("qwen2", "Qwen-Qwen2.5-7B-Instruct", marks=pytest.mark.slow),
])
def test_real_template_on_its_vocab_tokenizes_the_same(rebuilt, tmp_path, vocab, name):
    """The user's path end to end: llama.cpp renders the GGUF's template and tokenizes it with special tokens,
    and gets the ids transformers gets from the source folder."""
    from transformers import AutoTokenizer

    src = tmp_path / "tok"
    shutil.copytree(rebuilt(vocab), src)
    (src / "chat_template.jinja").write_text(template(name), encoding="utf-8")
    d = tiny_model(tmp_path / "m", src)
    rec = export_gguf(d, tmp_path / "out")
    llm = llama_vocab(tmp_path / "out" / rec["file"])
    assert llama_chat_ids(llm, CHAT) == hf_chat_ids(AutoTokenizer.from_pretrained(d), CHAT)


def test_named_templates_travel(base, tmp_path):
    """transformers 5's named templates (additional_chat_templates/NAME.jinja): GGUF's
    tokenizer.chat_template.NAME, and tokenizer_config.json's list form in the ONNX folder."""
    import gguf

    from llmbuild.targets import tokenizer_files

    d = tmp_path / "m"
    shutil.copytree(base, d)
    (d / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    (d / "additional_chat_templates").mkdir()
    (d / "additional_chat_templates" / "tool_use.jinja").write_text("tools: {{ messages[0]['content'] }}")
    rec = export_gguf(d, tmp_path / "gguf")
    fields = gguf.GGUFReader(tmp_path / "gguf" / rec["file"]).fields
    assert fields["tokenizer.chat_template"].contents() == "{{ messages[0]['content'] }}"
    assert fields["tokenizer.chat_template.tool_use"].contents() == "tools: {{ messages[0]['content'] }}"
    out = tmp_path / "folder"
    out.mkdir()
    assert "additional_chat_templates/tool_use.jinja" in tokenizer_files.ship(d, out)
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == [
        {"name": "default", "template": "{{ messages[0]['content'] }}"},
        {"name": "tool_use", "template": "tools: {{ messages[0]['content'] }}"}]


def test_tokenizer_in_model_code(base, tmp_path):
    """A tokenizer that is the model's own Python (auto_map): the ONNX folder ships it as it is, the GGUF
    cannot carry it."""
    from llmbuild.errors import InvalidInput
    from llmbuild.targets import gguf as G
    from llmbuild.targets import tokenizer_files

    d = tmp_path / "m"
    shutil.copytree(base, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["tokenization_acme.AcmeTokenizer", None]}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    tokenizer_files.check(d, "targets.o")
    with pytest.raises(InvalidInput, match=r"^targets\.g: .*tokenizer_config\.json: the tokenizer is the model's "
                                           r"own Python code \(auto_map\)"):
        G.check(G.Options(), json.loads((d / "config.json").read_text()), "targets.g", d)
