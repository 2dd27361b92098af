"""The tokenizer matrix: llama.cpp's real vocab files through llmbuild's GGUF, one row per vocab and source.

For each `models/ggml-vocab-NAME.gguf` of llama-cpp-python's sdist (fetched by `make test-data`), the source
tokenizer is rebuilt by transformers (`gguf_file=`), and where that is not the model's own pre-tokenizer, also
rebuilt with it ("original", from llmbuild's table); a tiny Llama goes behind it, llmbuild writes the GGUF,
and llama.cpp reads it. Printed per row: the GGUF form, on how many of llama.cpp's test strings llama.cpp's
ids equal the source's, and equal the ids llama.cpp's own test expects (.out), or why the row was refused.
tests/tokenizers/test_real_vocabs.py asserts the same; this prints the figures.

    make test-data && LLMBUILD_TEST_DATA=~/.cache/llmbuild-test-data/llama-cpp-python-0.3.36 \\
        .venv/bin/python bench/tokenizer_matrix.py [NAME ...]      # about 3 minutes for all on 2 cores
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmbuild.errors import InvalidInput
from tests.tokenizers.helpers import export_gguf, llama_vocab, tiny_model, tokenizer_from_gguf, vocab_cases, vocab_dir
from tests.tokenizers.test_real_vocabs import EXPECTED, original


def row(name: str, flavour: str, tok_dir: Path, work: Path, mode: str) -> str:
    from transformers import AutoTokenizer

    cases = vocab_cases(vocab_dir(), name)
    d = tiny_model(work / "m", tok_dir)
    try:
        rec = export_gguf(d, work / "out", tokenizer=mode)
    except InvalidInput as e:
        why = str(e).split(": ", 1)[1].split(";")[0].split(" (")[0]
        return f"| {name} | {flavour} | {mode} | refused | - | - | {why} |"
    tok, llm = AutoTokenizer.from_pretrained(d), llama_vocab(work / "out" / rec["file"])
    same = same_out = nfc = 0
    for text, expected in cases:
        hf = tok.encode(text, add_special_tokens=False)
        cpp = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        same += cpp == hf
        same_out += cpp == expected
        nfc += cpp != hf and not unicodedata.is_normalized("NFC", text)
    t = rec["tokenizer"]
    notes = "; ".join(d.split(";")[0].split(" (")[0] for d in t.get("differences", []))
    if nfc:
        notes += f" ({nfc} differing strings are not NFC)"
    return (f"| {name} | {flavour} | {mode} | {t['model']}/{t['pre']} | {same}/{len(cases)} | {same_out}/{len(cases)} "
            f"| {notes or '-'} |")


def main(names: list[str]) -> None:
    models = vocab_dir()  # exits with how to fetch the files when they are absent
    print("| vocab | source | tokenizer | GGUF form | llama.cpp = source | llama.cpp = .out | notes |")
    print("|---|---|---|---|---|---|---|")
    for name in names or list(EXPECTED):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            tok = tokenizer_from_gguf(models, f"ggml-vocab-{name}.gguf")
            tok.save_pretrained(work / "rebuilt")
            modes = ["match", "nearest"] if EXPECTED[name][0] is None else ["match"]
            for mode in modes:
                print(row(name, "transformers", work / "rebuilt", work / f"t-{mode}", mode), flush=True)
            if EXPECTED[name][1]:
                src = original(work / "rebuilt", name, work / "original")
                print(row(name, "original", src, work / "o", "match"), flush=True)
            shutil.rmtree(work / "rebuilt")


if __name__ == "__main__":
    main(sys.argv[1:])
