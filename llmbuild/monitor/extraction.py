"""What a response is checked against and what it claims: passages with ids, citations, claims, refusals.

Passages come from the request, in this order: an explicit `documents` field; tool messages (each one
passage, or the numbered passages inside it); numbered passages in system or user messages (or the raw
prompt), found by `extraction.passage_patterns` at the start of a line and running to the next passage
or a blank line. A passage whose id is not a number is also citable by its position ("[2]" = the second),
as ALCE numbers its documents.

Claims are the response's sentences with their citations removed (ALCE's unit). Sentences are split
here rather than with nltk's punkt, which needs a data download: a sentence ends at . ! ? followed by
space and an upper-case letter, digit, quote or bracket, or at a line break; a citation that follows the
full stop ("Paris. [1]") belongs to the sentence before it. Footnote definitions ("[^1]: source") are
sources, not claims.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llmbuild.monitor.records import Exchange

_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
_FOOTNOTE_DEF = re.compile(r"^\s*\[\^[^\]]+\]:")
_WORD = re.compile(r"\w", re.UNICODE)


@dataclass
class Passage:
    id: str
    text: str
    source: str  # documents | tool | system | user | prompt
    aliases: tuple[str, ...] = ()


@dataclass
class Sentence:
    text: str  # the claim: the sentence without its citations
    cited: list[str] = field(default_factory=list)  # ids as written, in order


class Extractor:
    def __init__(self, cfg):
        self.passage_rx = [re.compile(p, re.MULTILINE) for p in cfg.passage_patterns]
        self.citation_rx = [re.compile(p) for p in cfg.citation_patterns]
        self.refusal_rx = [re.compile(p, re.IGNORECASE) for p in cfg.refusal_patterns]

    # --- passages ----------------------------------------------------------------------------------
    def numbered(self, text: str, source: str) -> list[Passage]:
        """Passages that start a line with an id marker, each running to the next marker or a blank line."""
        marks = []
        for rx in self.passage_rx:
            for m in rx.finditer(text):
                if not any(s <= m.start() < e for s, e, _ in marks):
                    marks.append((m.start(), m.end(), m.group("id")))
        marks.sort()
        out = []
        for i, (_, end, pid) in enumerate(marks):
            stop = marks[i + 1][0] if i + 1 < len(marks) else len(text)
            body = text[end:stop]
            blank = re.search(r"\n\s*\n", body)
            body = body[:blank.start()] if blank else body
            if body.strip():
                out.append(Passage(pid.strip(), body.strip(), source))
        return out

    def passages(self, ex: Exchange) -> list[Passage]:
        out: list[Passage] = []
        for i, d in enumerate(ex.documents, 1):
            text = f"Title: {d['title']}\n{d['text']}" if d.get("title") else d["text"]
            out.append(Passage(str(d.get("id", i)), text, "documents"))
        for m in ex.messages:
            if m["role"] == "tool" and m["content"].strip():
                inner = self.numbered(m["content"], "tool")
                out.extend(inner or [Passage(m.get("tool_call_id") or str(len(out) + 1), m["content"].strip(), "tool")])
        for m in ex.messages:
            if m["role"] in ("system", "user", "developer"):
                out.extend(self.numbered(m["content"], m["role"]))
        if not ex.messages and ex.prompt:
            out.extend(self.numbered(ex.prompt, "prompt"))
        seen, unique = set(), []
        for p in out:
            key = p.id.lower()
            if key in seen:
                continue
            seen.add(key)
            unique.append(p)
        for i, p in enumerate(unique, 1):
            p.aliases = (p.id.lower(),) if p.id.isdigit() else (p.id.lower(), str(i))
        return unique

    # --- the response ------------------------------------------------------------------------------
    def citations(self, text: str) -> list[tuple[int, int, list[str]]]:
        """(start, end, ids) of every citation marker."""
        found = []
        for rx in self.citation_rx:
            for m in rx.finditer(text):
                if any(s <= m.start() < e for s, e, _ in found):
                    continue
                ids = [x.strip() for x in m.group("ids").split(",") if x.strip()]
                found.append((m.start(), m.end(), ids))
        return sorted(found)

    def strip_citations(self, text: str) -> str:
        for rx in self.citation_rx:
            text = rx.sub("", text)
        return re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()

    def sentences(self, response: str) -> list[Sentence]:
        pieces = []
        for line in response.splitlines():
            if not line.strip() or _FOOTNOTE_DEF.match(line):
                continue
            pieces.extend(s for s in _SENT_END.split(line.strip()) if s.strip())
        out: list[Sentence] = []
        for piece in pieces:
            cites = self.citations(piece)
            # citations at the very start of a piece follow the previous sentence's full stop
            lead = 0
            for s, e, ids in cites:
                if piece[lead:s].strip():
                    break
                if out:
                    out[-1].cited.extend(ids)
                lead = e
            rest = piece[lead:]
            ids = [i for s, e, group in cites if s >= lead for i in group]
            claim = self.strip_citations(rest)
            if len(_WORD.findall(claim)) >= 2:
                out.append(Sentence(claim, ids))
            elif out and ids:
                out[-1].cited.extend(ids)
        return out

    def is_refusal(self, response: str) -> bool:
        head = response.strip()[:200]
        return any(rx.search(head) for rx in self.refusal_rx)


def resolve(cited: list[str], passages: list[Passage]) -> list[Passage | None]:
    """The passage each cited id names (None when it names none)."""
    by_alias = {}
    for p in passages:
        for a in p.aliases:
            by_alias.setdefault(a, p)
    return [by_alias.get(c.lower().lstrip("^")) for c in cited]
