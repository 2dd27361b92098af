"""Every place llmbuild renders a chat template renders it in jinja2's sandbox (through transformers'
apply_chat_template), and an escape attempt ends in InvalidInput with nothing run."""

from __future__ import annotations

import pytest

from llmbuild.errors import InvalidInput


@pytest.fixture()
def evil_tokenizer(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models["LlamaForCausalLM"]))
    flag = tmp_path / "template-ran"
    # harmless on the static check's sample conversation, an escape attempt on the word "go": the
    # render-time sandbox is what stops it here (the static check in acquire refuses it earlier)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if messages[-1]['content'] == 'go' %}"
                         f"{{{{ cycler.__init__.__globals__.os.system('touch {flag}') }}}}{{% endif %}}")
    return tok, flag


def test_render_chat(evil_tokenizer):
    from llmbuild.finetune.data import render_chat

    tok, flag = evil_tokenizer
    assert "user: hello" in render_chat(tok, [{"role": "user", "content": "hello"}], add_generation_prompt=True)
    with pytest.raises(InvalidInput, match="tries to leave the Jinja sandbox"):
        render_chat(tok, [{"role": "user", "content": "go"}], add_generation_prompt=True)
    assert not flag.exists()


def test_fine_tuning_records_and_golden_prompts(evil_tokenizer):
    from llmbuild.finetune.config import Shape
    from llmbuild.finetune.data import encode, golden_prompt_ids

    tok, flag = evil_tokenizer
    with pytest.raises(InvalidInput, match="tries to leave the Jinja sandbox"):
        encode({"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": "x"},
                             {"role": "user", "content": "go"}]}, Shape.chat, tok, 64)
    with pytest.raises(InvalidInput, match="tries to leave the Jinja sandbox"):
        golden_prompt_ids("go", Shape.chat, tok)
    assert not flag.exists()


def test_evaluation_golden_prompts(evil_tokenizer):
    from llmbuild.stages.evaluate import _golden_ids

    tok, flag = evil_tokenizer
    assert _golden_ids(tok, "hello", "auto")
    with pytest.raises(InvalidInput, match="tries to leave the Jinja sandbox"):
        _golden_ids(tok, "go", "auto")
    assert not flag.exists()


@pytest.mark.parametrize("template", ["{{ ''.__class__ }}", "{{ messages['__class__'] }}",
                                      "{{ range.__self__ }}"])
def test_static_check_refuses_private_attributes_the_sandbox_would_only_blank(tmp_path, template):
    import json

    from llmbuild.checkpoint import check_chat_template

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    with pytest.raises(InvalidInput, match="tokenizer_config.json: the chat template tries to leave the Jinja sandbox"):
        check_chat_template(tmp_path)


def test_static_check_passes_real_templates(tmp_path):
    import json

    from llmbuild.checkpoint import check_chat_template
    from llmbuild.finetune.data import DEFAULT_CHAT_TEMPLATE

    strict = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
              "{% endif %}{{ m['content'] }}{% endfor %}")  # rejects the sample: left to the real renders
    for t in (DEFAULT_CHAT_TEMPLATE, strict, [{"name": "default", "template": DEFAULT_CHAT_TEMPLATE}]):
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": t}))
        check_chat_template(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{% for m in messages %}"}))
    with pytest.raises(InvalidInput, match="does not parse"):
        check_chat_template(tmp_path)
