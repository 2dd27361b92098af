"""One request/response exchange, whatever log it came from: what the readers produce and the metrics read."""

from __future__ import annotations

from dataclasses import dataclass, field


class BadRecord(Exception):
    """A log line or record the reader cannot use; the message says why (the reader adds file:line)."""


@dataclass
class Exchange:
    where: str  # file:line of the record (of the response, for formats that log request and response apart)
    id: str  # the response/request id as logged; sampling hashes it
    time: float  # unix seconds when the request started
    messages: list[dict] = field(default_factory=list)  # [{"role", "content": str, "tool_call_id"?}]
    documents: list[dict] = field(default_factory=list)  # an explicit `documents` field: [{"id"?, "text", "title"?}]
    prompt: str | None = None  # the raw prompt text when there are no messages (completions, vLLM)
    response: str | None = None  # the generated text; None when the request failed
    finish_reason: str | None = None
    status: int = 200  # HTTP status; >= 400 is an error exchange
    error: str | None = None
    latency_s: float | None = None
    model: str | None = None
    build: str | None = None
    reference: str | None = None  # a reference answer, when the log carries one
    weight: float = 1.0  # inverse sampling probability (proxy sampling x monitor sampling)

    @property
    def failed(self) -> bool:
        return self.status >= 400 or self.response is None


def content_text(content) -> str:
    """A chat message's content as text: OpenAI allows a string or a list of parts ({"type": "text", "text"})."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                text = part.get("text", part.get("content"))
                if isinstance(text, str):
                    out.append(text)
        return "\n".join(out)
    return str(content)


def reference_of(rec: dict, request: dict, keys: list[str]) -> str | None:
    """A reference answer from the record's top level, then from the request's `metadata` (OpenAI's field)."""
    for where in (rec, request.get("metadata") if isinstance(request.get("metadata"), dict) else {}):
        for k in keys:
            v = where.get(k)
            if isinstance(v, str) and v.strip():
                return v
    return None
