"""Fine-tuning data: check the JSONL files, load them with `datasets`, and turn records into token ids
and labels.

Every file is first read line by line so that a bad record is reported as `file:line` (the `datasets`
JSON loader only says that parsing failed somewhere); then it is loaded with `datasets.load_dataset`
("json" builder, offline, cache in the stage's work folder). All of this happens before training, so
bad data fails in seconds with exit 2, not after minutes.

Shapes (llmbuild.finetune.config.Shape):
- text: `{"text"}`, loss on every token.
- instruction: `{"instruction", "input"?, "output"}` (Alpaca), rendered as `### Instruction:` /
  `### Input:` / `### Response:` sections; loss on the output only.
- chat: `{"messages": [{"role": system|user|assistant, "content"}]}`, rendered with the tokenizer's
  chat template (a plain `Role: content` template when the tokenizer has none); loss on the
  assistant turns only.
Labels are found from character spans: the text is tokenized once, and a token is trained on when
its offsets overlap the answer's characters. That keeps the tokenization identical to what a user's
tokenizer produces for the whole text, which tokenizing the pieces separately would not.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.finetune.config import FinetuneConfig, Shape

IGNORE = -100  # the label torch's cross-entropy skips
ROLES = ("system", "user", "assistant")

# Used only when the tokenizer ships no chat template; it is then saved with the merged model, so the
# model is prompted the way it was trained. The generation prompt ends at "Assistant:" and the reply
# starts with its space, so the prompt's tokens are a prefix of the conversation's tokens. Role names
# are spelled out rather than filtered (`| capitalize`): the Jinja subsets clients render templates
# with (onnxruntime-genai's, transformers.js') do not all implement every filter.
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{% if m['role'] == 'user' %}User{% elif m['role'] == 'assistant' %}Assistant{% else %}System{% endif %}"
    ":{{ ' ' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\nAssistant:' }}{% endif %}"
)


def instruction_prompt(instruction: str, input_text: str | None) -> str:
    """The Alpaca sections without the preamble (it costs tokens and teaches nothing)."""
    s = f"### Instruction:\n{instruction}\n\n"
    if input_text:
        s += f"### Input:\n{input_text}\n\n"
    return s + "### Response:\n"


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass
class Source:
    """One dataset as loaded: what the record and the license stage need."""

    path: str
    shape: str
    license: str
    sha256: str
    records: int  # training records (after the held-out split)
    eval_records: int  # held-out records (eval_path, or the split)
    eval_path: str | None = None
    eval_sha256: str | None = None
    truncated: int = 0  # examples cut at max_seq_len
    dropped: int = 0  # examples with no trained token left after the cut


@dataclass
class Prepared:
    train: list[Example] = field(default_factory=list)
    eval: list[Example] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    chat_template_added: bool = False  # the default template was used (and must ship with the model)


# -- checking -------------------------------------------------------------------------------------------
def _check_record(rec, shape: Shape, where: str) -> None:
    if not isinstance(rec, dict):
        raise InvalidInput(f"{where}: a record must be a JSON object, got {type(rec).__name__}")

    def need_str(name: str, optional: bool = False) -> None:
        v = rec.get(name)
        if v is None and optional:
            return
        if name not in rec:
            raise InvalidInput(f"{where}: missing field {name!r} (a {shape.value} record needs "
                               f"{_FIELDS[shape]})")
        if not isinstance(v, str):
            raise InvalidInput(f"{where}: field {name!r} must be a string, got {type(v).__name__}")

    if shape is Shape.text:
        need_str("text")
        if not rec["text"].strip():
            raise InvalidInput(f"{where}: field 'text' is empty")
    elif shape is Shape.instruction:
        need_str("instruction")
        need_str("input", optional=True)
        need_str("output")
        if not rec["output"]:
            raise InvalidInput(f"{where}: field 'output' is empty (nothing to train on)")
    else:
        msgs = rec.get("messages")
        if msgs is None:
            raise InvalidInput(f"{where}: missing field 'messages' (a chat record needs {_FIELDS[shape]})")
        if not isinstance(msgs, list) or not msgs:
            raise InvalidInput(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise InvalidInput(f"{where}: messages[{j}] needs 'role' and 'content'")
            if m["role"] not in ROLES:
                raise InvalidInput(f"{where}: messages[{j}] has unknown role {m['role']!r}; known: {', '.join(ROLES)}")
            if not isinstance(m["content"], str):
                raise InvalidInput(f"{where}: messages[{j}].content must be a string")
        if not any(m["role"] == "assistant" for m in msgs):
            raise InvalidInput(f"{where}: no assistant message (nothing to train on)")


_FIELDS = {
    Shape.text: "'text'",
    Shape.instruction: "'instruction', 'output' and optionally 'input'",
    Shape.chat: "'messages' with 'role' and 'content'",
}


def check_file(path: Path, shape: Shape, key: str) -> list[int]:
    """Check every line of a JSONL file; return the line number of each record (blank lines skipped)."""
    lines = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{key}: {path}:{n}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InvalidInput(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
                _check_record(rec, shape, where)
                lines.append(n)
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{key}: {path} is not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise InvalidInput(f"{key}: cannot read {path} ({e.strerror})") from None
    if not lines:
        raise InvalidInput(f"{key}: {path} has no records (empty dataset)")
    return lines


def load_rows(path: Path, shape: Shape, key: str, cache_dir: Path | None) -> tuple[list[dict], list[int]]:
    """Checked records of one JSONL file, loaded through `datasets`, with their line numbers."""
    lines = check_file(path, shape, key)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only: never reach for the Hub
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset("json", data_files=str(path), split="train",
                                   cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as e:
        raise InvalidInput(f"{key}: {path}: datasets cannot load it ({str(e).splitlines()[0]})") from None
    if len(ds) != len(lines):
        raise InvalidInput(f"{key}: {path}: datasets read {len(ds)} records where there are {len(lines)} lines")
    return list(ds), lines


# -- tokenizing ---------------------------------------------------------------------------------------
def ensure_chat_template(tok) -> bool:
    """Give a tokenizer without a chat template the default one; True when it was added."""
    if getattr(tok, "chat_template", None):
        return False
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def render_chat(tok, messages: list[dict], add_generation_prompt: bool) -> str:
    """The one place llmbuild renders a chat template: transformers' apply_chat_template, which runs it
    in jinja2's ImmutableSandboxedEnvironment; an escape attempt is the checkpoint's fault (exit 2)."""
    from jinja2.exceptions import SecurityError

    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
    except SecurityError as e:
        from llmbuild.checkpoint import sandbox_message

        raise InvalidInput(sandbox_message(f"{getattr(tok, 'name_or_path', 'the tokenizer')}", e)) from None


def _spans(rec: dict, shape: Shape, tok) -> tuple[str, list[tuple[int, int]], bool]:
    """(text, trained character spans, whether the tokenizer should add its special tokens)."""
    if shape is Shape.text:
        return rec["text"], [(0, len(rec["text"]))], True
    if shape is Shape.instruction:
        prompt = instruction_prompt(rec["instruction"], rec.get("input"))
        text = prompt + rec["output"]
        return text, [(len(prompt), len(text))], True
    msgs = rec["messages"]
    text = render_chat(tok, msgs, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = render_chat(tok, msgs[:i], add_generation_prompt=True) if i else ""
        upto = render_chat(tok, msgs[: i + 1], add_generation_prompt=False)
        # the turn's characters are found by rendering the conversation up to it; a template that
        # rewrites earlier turns (some strip reasoning from old replies) breaks this and is refused
        if not (text.startswith(upto) and upto.startswith(before)):
            raise ValueError("the chat template does not render a conversation as a prefix of its longer self, "
                             "so the assistant turns cannot be located")
        spans.append((len(before), len(upto)))
    # the template writes the special tokens (BOS, turn markers) itself
    return text, spans, False


def encode(rec: dict, shape: Shape, tok, max_seq_len: int) -> tuple[Example, bool]:
    """Token ids and labels for one record (IGNORE outside the trained spans); and whether it was cut."""
    text, spans, special = _spans(rec, shape, tok)
    enc = tok(text, add_special_tokens=special, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [IGNORE] * len(ids)
    for k, (s, e) in enumerate(enc["offset_mapping"]):
        if e > s and any(s < b and e > a for a, b in spans):
            labels[k] = ids[k]
    if shape is not Shape.chat and tok.eos_token_id is not None:
        # the model must learn to stop; a chat template writes its own end-of-turn token
        ids.append(tok.eos_token_id)
        labels.append(tok.eos_token_id)
    cut = len(ids) > max_seq_len
    return Example(ids[:max_seq_len], labels[:max_seq_len]), cut


def golden_prompt_ids(prompt: str, shape: Shape, tok) -> list[int]:
    """A golden question rendered the way the (first) training set renders its prompts."""
    if shape is Shape.chat:
        text = render_chat(tok, [{"role": "user", "content": prompt}], add_generation_prompt=True)
        return list(tok(text, add_special_tokens=False)["input_ids"])
    if shape is Shape.instruction:
        return list(tok(instruction_prompt(prompt, None))["input_ids"])
    return list(tok(prompt)["input_ids"])


def _encode_all(rows: list[dict], lines: list[int], shape: Shape, tok, max_seq_len: int, path: Path,
                key: str, src: Source) -> list[Example]:
    out = []
    for rec, n in zip(rows, lines, strict=True):
        try:
            ex, cut = encode(rec, shape, tok, max_seq_len)
        except InvalidInput:
            raise
        except Exception as e:
            raise InvalidInput(f"{key}: {path}:{n}: cannot render this record: {str(e).splitlines()[0]}") from None
        src.truncated += cut
        if all(label == IGNORE for label in ex.labels):
            src.dropped += 1
            continue
        out.append(ex)
    return out


def prepare(cfg: FinetuneConfig, tok, cache_dir: Path | None, key: str = "finetune") -> Prepared:
    """Check, load, split and tokenize every dataset of the recipe."""
    from llmbuild.hashing import sha256_file

    prep = Prepared()
    if any(d.shape is Shape.chat for d in cfg.datasets):
        prep.chat_template_added = ensure_chat_template(tok)
    loaded = []
    # check every file before tokenizing any, so the first bad line is found fast
    for i, d in enumerate(cfg.datasets):
        dkey = f"{key}.datasets[{i}]"
        rows, lines = load_rows(Path(d.path), d.shape, f"{dkey}.path", cache_dir)
        ev = load_rows(Path(d.eval_path), d.shape, f"{dkey}.eval_path", cache_dir) if d.eval_path else None
        loaded.append((d, dkey, rows, lines, ev))
    for i, (d, dkey, rows, lines, ev) in enumerate(loaded):
        train_idx, eval_idx = split(len(rows), None if ev else d.eval_fraction, cfg.seed, i)
        src = Source(path=d.path, shape=d.shape.value, license=d.license, sha256=sha256_file(Path(d.path)),
                     records=len(train_idx), eval_records=len(ev[0]) if ev else len(eval_idx),
                     eval_path=d.eval_path, eval_sha256=sha256_file(Path(d.eval_path)) if d.eval_path else None)
        prep.train += _encode_all([rows[j] for j in train_idx], [lines[j] for j in train_idx], d.shape, tok,
                                  cfg.max_seq_len, Path(d.path), f"{dkey}.path", src)
        if ev:
            prep.eval += _encode_all(ev[0], ev[1], d.shape, tok, cfg.max_seq_len, Path(d.eval_path),
                                     f"{dkey}.eval_path", src)
        else:
            prep.eval += _encode_all([rows[j] for j in eval_idx], [lines[j] for j in eval_idx], d.shape, tok,
                                     cfg.max_seq_len, Path(d.path), f"{dkey}.path", src)
        prep.sources.append(src)
    if not prep.train:
        raise InvalidInput(f"{key}.datasets: no example has a trained token left within "
                           f"{key}.max_seq_len={cfg.max_seq_len}")
    return prep


def split(n: int, fraction: float | None, seed: int, index: int) -> tuple[list[int], list[int]]:
    """Seeded held-out split of n records: (train indices, eval indices), both in file order."""
    if not fraction or n < 2:
        return list(range(n)), []
    k = min(n - 1, max(1, round(n * fraction)))
    # a string seed is hashed with sha512 by `random`, so the split does not depend on PYTHONHASHSEED
    held = set(random.Random(f"llmbuild-eval-split:{seed}:{index}").sample(range(n), k))
    return [j for j in range(n) if j not in held], sorted(held)


def read_golden(path: Path, key: str) -> list[dict]:
    """The golden set: JSONL of {"prompt", "answer"} strings, the same format the evaluation stage reads."""
    from llmbuild.evaluation.data import read_golden as read

    return read(path, key)
