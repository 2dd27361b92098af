"""The nli scorer: a Hugging Face sequence-classification checker, local or pinned on the Hub.

Written for the public checkers people deploy for this (their cards give the input shapes):
- HHEM-2.1-Open (vectara/hallucination_evaluation_model): flan-t5-base classifier shipped as remote code;
  `trust_remote_code=true`, `tokenizer=google/flan-t5-base`, `input=template` with its prompt
  "<pad> Determine if the hypothesis is true given the premise?\n\nPremise: {premise}\n\nHypothesis: {hypothesis}",
  `entailment_label=1` (P(consistent)); its [batch, tokens, labels] logits are read at the first token, as it does.
- MiniCheck-RoBERTa-Large / MiniCheck-DeBERTa-v3-Large (lytang/...): `input=joined` (document + eos + claim),
  `entailment_label=1`.
- DeBERTa NLI models (e.g. MoritzLaurer/DeBERTa-v3-base-mnli-fever-anli, the one TruLens uses for
  groundedness): `input=pair`, `entailment_label=entailment`.
A Hub id must come with `revision=<commit sha>`; with HF_HUB_OFFLINE=1 it is read from the local cache.
The checker runs in eval mode under torch.inference_mode with a fixed thread count; inputs are batched by
length and put back in order, so a score does not depend on the batch it was computed in (tested).
The digest of the checker's files goes into every result.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.monitor.scorers import Scorer, word_chunks

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_WEIGHTS = ("*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.py", "*.tiktoken")


def checker_folder(model: str, revision: str | None) -> Path:
    p = Path(model).expanduser()
    if p.exists():
        if not p.is_dir():
            raise InvalidInput(f"scorer.model: {p} is a file; give the checker's folder (config.json, weights, tokenizer)")
        return p
    if not _HUB_ID.match(model) or model.startswith((".", "/", "~")):
        raise InvalidInput(f"scorer.model: {model} not found")
    if not revision or not _SHA.match(revision):
        raise InvalidInput(f"scorer.model: {model} is not a folder here; as a Hub id it needs scorer.revision=<the "
                           f"commit sha, 40 hex digits> so scores are reproducible")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, revision=revision, allow_patterns=list(_WEIGHTS)))
    except Exception as e:  # offline, unknown repo, gated ...: one line, naming the key
        raise InvalidInput(f"scorer.model: cannot get {model}@{revision[:12]} ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None


def folder_digest(folder: Path) -> str:
    """sha256 over the checker's files (name and content), so a changed file changes every result's digest."""
    h = hashlib.sha256()
    files = sorted({f for pat in _WEIGHTS for f in folder.glob(pat) if f.is_file()})
    for f in files:
        d = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                d.update(block)
        h.update(f"{f.name}\0{d.hexdigest()}\n".encode())
    return "sha256:" + h.hexdigest()


def entailment_index(id2label: dict, wanted: str) -> int:
    labels = {int(k): str(v) for k, v in id2label.items()}
    w = str(wanted).strip()
    if w.isdigit() and int(w) in labels:
        return int(w)
    for i, name in labels.items():
        if name.lower() == w.lower():
            return i
    shown = ", ".join(f"{i}={n}" for i, n in sorted(labels.items()))
    raise InvalidInput(f"scorer.entailment_label: {wanted!r} names no label of the checker ({shown}); "
                       f"give a label name or index")


class NLIScorer(Scorer):
    name = "nli"

    def __init__(self, cfg):
        super().__init__(cfg)
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the monitor prints one line per run, not loading bars

        self.folder = checker_folder(cfg.model, cfg.revision)
        if not (self.folder / "config.json").is_file():
            raise InvalidInput(f"scorer.model: {self.folder} has no config.json: not a Hugging Face checkpoint")
        try:
            config = AutoConfig.from_pretrained(str(self.folder), trust_remote_code=cfg.trust_remote_code)
        except (ValueError, OSError, KeyError) as e:
            raise InvalidInput(f"scorer.model: {self.folder}: cannot read config.json ({str(e).splitlines()[0]})") from None
        archs = list(getattr(config, "architectures", None) or [])
        if not any(a.endswith("ForSequenceClassification") for a in archs):
            raise InvalidInput(f"scorer.model: {self.folder} is a {', '.join(archs) or config.model_type} checkpoint, "
                               f"not a sequence-classification model (…ForSequenceClassification)")
        self.label_index = entailment_index(config.id2label, cfg.entailment_label)
        self.labels = {int(k): str(v) for k, v in config.id2label.items()}
        self.digest = folder_digest(self.folder)
        dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                str(self.folder), trust_remote_code=cfg.trust_remote_code, dtype=dtype).eval()
        except (ValueError, OSError) as e:
            raise InvalidInput(f"scorer.model: {self.folder}: cannot load it as a sequence-classification model "
                               f"({str(e).splitlines()[0]})") from None
        tok_src = cfg.tokenizer or str(self.folder)
        try:
            self.tok = AutoTokenizer.from_pretrained(tok_src)
        except (ValueError, OSError) as e:
            raise InvalidInput(f"scorer.tokenizer: no tokenizer at {tok_src} ({str(e).splitlines()[0]}); "
                               f"set scorer.tokenizer") from None
        self.sep = self.tok.eos_token or self.tok.sep_token or "\n"
        self._chunks: dict[str, list[str]] = {}

    @property
    def info(self):
        c = self.cfg
        return {"name": self.name, "threshold": self.threshold, "model": c.model, "revision": c.revision,
                "digest": self.digest, "entailment_label": self.labels[self.label_index], "input": c.input,
                "max_length": c.max_length, "chunk_tokens": c.chunk_tokens, "dtype": c.dtype}

    def _count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False).input_ids)

    def chunks(self, text):
        got = self._chunks.get(text)
        if got is None:
            got = self._chunks[text] = word_chunks(text, self.cfg.chunk_tokens, self._count)
        return got

    def _encode(self, batch):
        c = self.cfg
        if c.input == "pair":
            return self.tok([p for p, _ in batch], [h for _, h in batch], truncation="only_first",
                            max_length=c.max_length, padding=True, return_tensors="pt")
        if c.input == "joined":
            texts = [f"{p}{self.sep}{h}" for p, h in batch]
        else:
            texts = [c.template.format(premise=p, hypothesis=h) for p, h in batch]
        return self.tok(texts, truncation=True, max_length=c.max_length, padding=True, return_tensors="pt")

    def _score(self, pairs):
        import torch

        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out = [0.0] * len(pairs)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.cfg.threads)
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.cfg.batch_size):
                    idx = order[start:start + self.cfg.batch_size]
                    enc = self._encode([pairs[i] for i in idx])
                    logits = self.model(**enc).logits.float()
                    if logits.ndim == 3:  # HHEM: token-classification logits, read at the first position
                        logits = logits[:, 0, :]
                    probs = torch.softmax(logits, dim=-1)[:, self.label_index].tolist()
                    for i, p in zip(idx, probs):
                        out[i] = p
        finally:
            torch.set_num_threads(threads)
        return out


def load(cfg) -> NLIScorer:
    return NLIScorer(cfg)
