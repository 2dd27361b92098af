"""Issue 15's tokenizer bug, on the demo's own tokenizer (trained as recipes/demo.yaml says): llama.cpp reading
llmbuild's GGUF gives the ids transformers gives on every golden prompt (rendered by the GGUF's chat template, as
llama-cpp-python's create_chat_completion does) and on the parity and held-out texts (as llama-perplexity
tokenizes a file), where it gave "▁U" (612) for transformers' "U" (1968) after <s> on all 38 golden prompts."""

from __future__ import annotations

import json

import pytest
import yaml

from llmbuild.finetune.data import DEFAULT_CHAT_TEMPLATE, Shape, golden_prompt_ids
from llmbuild.synth import create_model
from tests.conftest import REPO
from tests.tokenizers.helpers import TINY_SHAPE, export_gguf, llama_chat_ids, llama_vocab

pytestmark = pytest.mark.llamacpp


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A tiny model behind the demo's tokenizer, with the chat template fine-tuning gives it, and its GGUF."""
    from transformers import AutoTokenizer

    recipe = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())["model"]["tokenizer"]
    root = tmp_path_factory.mktemp("demo")
    d = create_model(root / "m", "LlamaForCausalLM", TINY_SHAPE, seed=0, train_text=REPO / recipe["train_text"],
                     vocab_size=recipe["vocab_size"])
    (d / "chat_template.jinja").write_text(DEFAULT_CHAT_TEMPLATE)  # what the LoRA stage ships (finetune/merge.py)
    rec = export_gguf(d, root / "gguf", name="llmbuild-demo-tiny-llama")
    return AutoTokenizer.from_pretrained(d), llama_vocab(root / "gguf" / rec["file"]), rec


def test_golden_prompts(demo):
    tok, llm, rec = demo
    assert rec["tokenizer"]["tokens"] == 2000 and "differences" not in rec["tokenizer"]
    golden = [json.loads(line)["prompt"] for line in (REPO / "data" / "finetune" / "golden.jsonl").open()]
    assert len(golden) == 38
    for q in golden:
        ours = golden_prompt_ids(q, Shape.chat, tok)  # what the evaluate stage feeds every runtime
        assert llama_chat_ids(llm, [{"role": "user", "content": q}]) == ours, q
        assert tok.convert_ids_to_tokens(ours[1]) == "\u2581U"  # "User:" after <s>: SentencePiece's own "▁"


@pytest.mark.parametrize("path", ["data/eval/parity.txt", "data/eval/heldout.txt", "data/eval/calibration.txt"])
def test_eval_texts(demo, path):
    tok, llm, _ = demo
    text = (REPO / path).read_text(encoding="utf-8")
    ids = tok(text, add_special_tokens=False).input_ids
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids
    assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok(text).input_ids == [tok.bos_token_id, *ids]
