"""Through the CLI: a tokenizer llama.cpp would run differently stops the build right after acquisition, with
one line naming the target, the file and the way out, exit 2 and nothing in the cache."""

from __future__ import annotations

from tests.conftest import make_tiny
from tests.test_plan_checks import assert_refused
from tests.tokenizers.test_gguf_vocab import metaspace_model


def test_metaspace_first_refused_before_any_stage(tmp_path):
    d = metaspace_model(tmp_path, "first", chat=True)
    line = assert_refused(tmp_path, ["recipe=tiny", "model.source=local", f"model.path={d}"],
                          "targets.gguf8: ", "tokenizer.json: Metaspace prepend_scheme 'first'",
                          "set the target's tokenizer: nearest")
    assert "targets.onnx32" not in line  # the ONNX folder ships the tokenizer as it is


def test_unknown_tokenizer_mode_refused_when_typed(tmp_path):
    d = make_tiny(tmp_path / "m")
    assert_refused(tmp_path, ["recipe=tiny", "model.source=local", f"model.path={d}", "+targets.gguf8.tokenizer=exact"],
                   "targets.gguf8.tokenizer: unknown mode 'exact'; known: match, nearest")
