"""Log readers: four formats in, `Exchange` records out; every unusable line reported with file:line.

- `proxy`: what `llmbuild-monitor proxy` writes, one exchange per line (schema in proxy.py).
- `openai`: OpenAI chat-completions bodies as other proxies log them: `{"request": <request body>,
  "response": <chat.completion> | [<chat.completion.chunk>, ...]}` per line, or the OpenAI Batch API's
  own files (input lines `{"custom_id", "method", "url", "body"}`, output lines `{"custom_id",
  "response": {"status_code", "body"}, "error"}`), joined by custom_id across the files given.
  https://platform.openai.com/docs/api-reference/chat/object, https://platform.openai.com/docs/guides/batch
- `otlp`: OpenTelemetry traces as OTLP/JSON (`ExportTraceServiceRequest` per line, as the Collector's
  file exporter writes them), GenAI spans with content capture on: `gen_ai.input.messages`,
  `gen_ai.output.messages`, `gen_ai.system_instructions` as structured values or JSON strings.
  https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding,
  https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/. The conventions' retrieval documents
  carry an id and a score, not the text, so passages come from the messages, or from an
  `llmbuild.documents` attribute (a JSON list like the proxy's `documents`) an application may add.
- `vllm`: vLLM's request logger (`--enable-log-requests`, `--enable-log-outputs`): "Received request ID:
  prompt: '...', params: ..." (older releases), "Request ID details: prompt: '...'" (DEBUG) or "...,
  prompt: '...'." (`--enable-log-request-prompts`), and "Generated response ID: output: '...', ...,
  finish_reason: stop", paired by request id (vllm/entrypoints/logger.py).
A reader is fed line by line (`feed`), so follow mode reads a growing file with the same code; formats
that pair two lines keep the unpaired ones and report them at `finish`.
"""

from __future__ import annotations

import ast
import json
import re
import time as _time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.monitor.records import BadRecord, Exchange, content_text, reference_of

PROXY_FORMAT = "llmbuild-monitor-proxy/1"


@dataclass
class Defaults:
    """Labels for records that carry none, and where reference answers are looked up."""

    model: str | None = None
    build: str | None = None
    reference_keys: list[str] = field(default_factory=lambda: ["reference"])


def _time_of(value, where_key: str) -> float:
    if isinstance(value, bool):
        raise BadRecord(f"'{where_key}' is not a time")
    if isinstance(value, (int, float)):
        return float(value) / (1e9 if value > 1e14 else 1.0)  # unix seconds, or nanoseconds
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise BadRecord(f"'{where_key}' is not an ISO 8601 time or unix seconds: {value!r}")


def _json(line: str) -> dict:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRecord(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(rec, dict):
        raise BadRecord("a record must be a JSON object")
    return rec


def _messages(raw, key: str) -> list[dict]:
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise BadRecord(f"'{key}' must be a list of message objects")
    out = []
    for m in raw:
        msg = {"role": str(m.get("role", "user")), "content": content_text(m.get("content"))}
        if m.get("tool_call_id"):
            msg["tool_call_id"] = str(m["tool_call_id"])
        out.append(msg)
    return out


def _documents(raw) -> list[dict]:
    """An explicit `documents` field: strings, or objects with text/content/snippet (+ id, title)."""
    if not isinstance(raw, list):
        return []
    docs = []
    for d in raw:
        if isinstance(d, str):
            docs.append({"text": d})
        elif isinstance(d, dict):
            data = d.get("data") if isinstance(d.get("data"), dict) else d  # Cohere-style {"data": {...}}
            text = next((data[k] for k in ("text", "content", "snippet") if isinstance(data.get(k), str)), None)
            if text is not None:
                doc = {"text": text}
                if data.get("title"):
                    doc["title"] = str(data["title"])
                if d.get("id") is not None or data.get("id") is not None:
                    doc["id"] = str(d.get("id", data.get("id")))
                docs.append(doc)
    return docs


def assemble_stream(chunks: list[dict]) -> dict:
    """A chat.completion from its streamed chat.completion.chunk objects (deltas concatenated per choice)."""
    choices: dict[int, dict] = {}
    first = chunks[0] if chunks else {}
    for c in chunks:
        for ch in c.get("choices") or []:
            i = ch.get("index", 0)
            acc = choices.setdefault(i, {"index": i, "message": {"role": "assistant", "content": ""},
                                         "finish_reason": None})
            delta = ch.get("delta") or {}
            if isinstance(delta.get("content"), str):
                acc["message"]["content"] += delta["content"]
            if ch.get("finish_reason"):
                acc["finish_reason"] = ch["finish_reason"]
            # /v1/completions streams "text" instead of a delta
            if isinstance(ch.get("text"), str):
                acc["message"]["content"] += ch["text"]
    usage = next((c["usage"] for c in reversed(chunks) if isinstance(c.get("usage"), dict)), None)
    return {"id": first.get("id"), "object": "chat.completion", "created": first.get("created"),
            "model": first.get("model"), "choices": [choices[i] for i in sorted(choices)], "usage": usage}


def _from_chat(request: dict, response, rec: dict, where: str, d: Defaults, *, time_value=None,
               status: int = 200, error: str | None = None, latency_s=None, weight: float = 1.0,
               build=None) -> list[Exchange]:
    """Exchanges (one per choice) from an OpenAI request body and its response body."""
    if not isinstance(request, dict):
        raise BadRecord("'request' must be the request body (an object)")
    if isinstance(response, list):
        response = assemble_stream([c for c in response if isinstance(c, dict)])
    messages = _messages(request["messages"], "request.messages") if "messages" in request else []
    prompt = request.get("prompt") if isinstance(request.get("prompt"), str) else None
    if not messages and prompt is None:
        raise BadRecord("the request has neither 'messages' nor 'prompt'")
    if time_value is None and isinstance(response, dict):
        time_value = response.get("created")
    if time_value is None:
        raise BadRecord("no time: give 'time' (ISO 8601 or unix seconds) or a response with 'created'")
    t = _time_of(time_value, "time")
    base = dict(where=where, time=t, messages=messages, documents=_documents(request.get("documents")), prompt=prompt,
                status=status, error=error, latency_s=latency_s, weight=weight,
                reference=reference_of(rec, request, d.reference_keys), build=build or d.build)
    model = request.get("model")
    if status >= 400 or response is None:
        return [Exchange(id=str(rec.get("id") or f"{where}"), model=model or d.model, response=None,
                         **{**base, "status": max(status, 500) if status < 400 else status,
                            "error": error or "no response"})]
    if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
        raise BadRecord("'response' must be a chat.completion object with 'choices' (or a list of chunks)")
    model = response.get("model") or model or d.model
    out = []
    for ch in response["choices"] or [{"index": 0, "message": {"content": ""}}]:
        if not isinstance(ch, dict):
            raise BadRecord("response.choices must hold objects")
        msg = ch.get("message") if isinstance(ch.get("message"), dict) else {}
        text = content_text(msg.get("content")) if msg else content_text(ch.get("text"))
        rid = str(response.get("id") or rec.get("id") or where)
        if len(response["choices"]) > 1:
            rid += f"#{ch.get('index', 0)}"
        out.append(Exchange(id=rid, model=model, response=text, finish_reason=ch.get("finish_reason"), **base))
    return out


class Reader:
    name = ""

    def __init__(self, defaults: Defaults):
        self.d = defaults
        self.line_skips: list[str] = []  # reasons for parts of the last line that were unusable (OTLP spans)

    def feed(self, line: str, where: str) -> list[Exchange]:
        raise NotImplementedError

    def take_skips(self, where: str) -> list[tuple[str, str]]:
        out = [(where, why) for why in self.line_skips]
        self.line_skips = []
        return out

    def finish(self) -> list[tuple[str, str]]:
        """(where, reason) for records still waiting for their other half."""
        return []


class ProxyReader(Reader):
    name = "proxy"

    def feed(self, line, where):
        rec = _json(line)
        if rec.get("format") != PROXY_FORMAT:
            raise BadRecord(f"not a proxy record (no \"format\": \"{PROXY_FORMAT}\")")
        for k in ("id", "time", "request"):
            if k not in rec:
                raise BadRecord(f"a proxy record needs '{k}'")
        status = rec.get("status", 200)
        if not isinstance(status, int):
            raise BadRecord("'status' must be an integer")
        return _from_chat(rec["request"], rec.get("response"), rec, where, self.d, time_value=rec["time"],
                          status=status, error=rec.get("error"), latency_s=rec.get("latency_s"),
                          weight=float(rec.get("sample_weight") or 1.0), build=rec.get("build"))


class OpenAIReader(Reader):
    name = "openai"

    def __init__(self, defaults):
        super().__init__(defaults)
        self.batch_requests: dict[str, tuple[dict, str]] = {}
        self.batch_outputs: dict[str, tuple[dict, str]] = {}

    def feed(self, line, where):
        rec = _json(line)
        if "custom_id" in rec:
            return self._batch(rec, where)
        if "request" not in rec or "response" not in rec:
            raise BadRecord("an openai record needs 'request' and 'response' (or is a Batch API line with 'custom_id')")
        status = rec.get("status", rec.get("status_code", 200))
        return _from_chat(rec["request"], rec["response"], rec, where, self.d,
                          time_value=rec.get("time", rec.get("timestamp")),
                          status=status if isinstance(status, int) else 200, latency_s=rec.get("latency_s"))

    def _batch(self, rec, where):
        cid = str(rec["custom_id"])
        if isinstance(rec.get("body"), dict):
            if rec.get("url") not in (None, "/v1/chat/completions", "/v1/completions"):
                raise BadRecord(f"a Batch API request for {rec.get('url')!r}, not chat completions")
            self.batch_requests[cid] = (rec, where)
        elif "response" in rec or "error" in rec:
            self.batch_outputs[cid] = (rec, where)
        else:
            raise BadRecord("a Batch API line needs 'body' (input file) or 'response' (output file)")
        if cid in self.batch_requests and cid in self.batch_outputs:
            req, _ = self.batch_requests.pop(cid)
            out, where_out = self.batch_outputs.pop(cid)
            resp = out.get("response") or {}
            status = resp.get("status_code", 200) if isinstance(resp, dict) else 500
            err = out.get("error")
            err_text = (err.get("message") if isinstance(err, dict) else str(err)) if err else None
            body = resp.get("body") if isinstance(resp, dict) else None
            return _from_chat(req["body"], body, {**req, **out, "id": cid}, where_out, self.d,
                              time_value=body.get("created") if isinstance(body, dict) else None,
                              status=status if not err else max(status, 500), error=err_text)
        return []

    def finish(self):
        left = [(w, f"Batch API request {cid!r} has no output line") for cid, (_, w) in self.batch_requests.items()]
        left += [(w, f"Batch API output {cid!r} has no request line") for cid, (_, w) in self.batch_outputs.items()]
        self.batch_requests.clear()
        self.batch_outputs.clear()
        return left


def any_value(v):
    """An OTLP/JSON AnyValue as a Python value (int64 is a decimal string in OTLP/JSON)."""
    if not isinstance(v, dict):
        return None
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [any_value(x) for x in (v["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in v:
        return {kv.get("key"): any_value(kv.get("value")) for kv in (v["kvlistValue"] or {}).get("values", [])}
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def _attributes(items) -> dict:
    return {a.get("key"): any_value(a.get("value")) for a in items or [] if isinstance(a, dict)}


def _structured(value, key: str):
    """A GenAI content attribute: structured, or a JSON string where the SDK cannot record structures."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadRecord(f"'{key}' is a string but not JSON") from None
    if not isinstance(value, list):
        raise BadRecord(f"'{key}' must be a list")
    return value


def _parts_text(parts, key: str) -> tuple[str, str | None]:
    """Text of GenAI message parts (text parts; a tool_call_response's response) and the tool call id."""
    if not isinstance(parts, list):
        raise BadRecord(f"'{key}' message without a 'parts' list")
    texts, call_id = [], None
    for p in parts:
        if not isinstance(p, dict):
            continue
        if p.get("type") == "text" and isinstance(p.get("content"), str):
            texts.append(p["content"])
        elif p.get("type") == "tool_call_response":
            call_id = str(p.get("id")) if p.get("id") is not None else None
            r = p.get("response")
            texts.append(r if isinstance(r, str) else json.dumps(r))
    return "\n".join(texts), call_id


class OTLPReader(Reader):
    name = "otlp"
    CONTENT_EVENT = "gen_ai.client.inference.operation.details"

    def __init__(self, defaults):
        super().__init__(defaults)
        self.ignored = 0  # spans that are not GenAI spans (HTTP, DB ...): counted, not errors

    def feed(self, line, where):
        rec = _json(line)
        if "resourceSpans" not in rec:
            raise BadRecord("not an OTLP/JSON trace export (no 'resourceSpans')")
        out = []
        for rs in rec.get("resourceSpans") or []:
            resource = _attributes((rs.get("resource") or {}).get("attributes"))
            for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
                for span in ss.get("spans") or []:
                    try:
                        out.extend(self._span(span, resource, where))
                    except BadRecord as e:  # one bad span does not lose the others of its export
                        self.line_skips.append(str(e))
        return out

    def _span(self, span: dict, resource: dict, where: str) -> list[Exchange]:
        attrs = _attributes(span.get("attributes"))
        for ev in span.get("events") or []:
            if ev.get("name") == self.CONTENT_EVENT:
                attrs.update({k: v for k, v in _attributes(ev.get("attributes")).items() if k not in attrs})
        if not any(str(k).startswith("gen_ai.") for k in attrs):
            self.ignored += 1
            return []
        sid = span.get("spanId", "?")
        here = f"{where} span {sid}"
        if "gen_ai.input.messages" not in attrs or "gen_ai.output.messages" not in attrs:
            raise BadRecord(f"span {sid}: a GenAI span without gen_ai.input.messages/gen_ai.output.messages "
                            "(content capture is off in the instrumentation)")
        try:
            messages = []
            if "gen_ai.system_instructions" in attrs:
                parts = _structured(attrs["gen_ai.system_instructions"], "gen_ai.system_instructions")
                messages.append({"role": "system", "content": _parts_text(parts, "gen_ai.system_instructions")[0]})
            for m in _structured(attrs["gen_ai.input.messages"], "gen_ai.input.messages"):
                if not isinstance(m, dict):
                    raise BadRecord("gen_ai.input.messages must hold message objects")
                text, call_id = _parts_text(m.get("parts"), "gen_ai.input.messages")
                msg = {"role": str(m.get("role", "user")), "content": text}
                if call_id:
                    msg["tool_call_id"] = call_id
                messages.append(msg)
            outputs = _structured(attrs["gen_ai.output.messages"], "gen_ai.output.messages")
            first = next((m for m in outputs if isinstance(m, dict)), None)
            response, finish = (_parts_text(first.get("parts"), "gen_ai.output.messages")[0],
                                first.get("finish_reason")) if first else ("", None)
            start = int(span.get("startTimeUnixNano") or 0)
            end = int(span.get("endTimeUnixNano") or 0)
        except (TypeError, ValueError) as e:
            raise BadRecord(f"span {sid}: {e}") from None
        if not start:
            raise BadRecord(f"span {sid}: no startTimeUnixNano")
        status = span.get("status") or {}
        failed = status.get("code") in (2, "STATUS_CODE_ERROR") or "error.type" in attrs
        docs = attrs.get("llmbuild.documents")
        return [Exchange(
            where=here, id=str(attrs.get("gen_ai.response.id") or sid), time=start / 1e9,
            messages=messages, documents=_documents(_structured(docs, "llmbuild.documents")) if docs else [],
            response=None if failed else response, finish_reason=finish,
            status=500 if failed else 200, error=str(attrs.get("error.type") or status.get("message") or "") or None,
            latency_s=(end - start) / 1e9 if end else None,
            model=attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model") or self.d.model,
            build=attrs.get("llmbuild.build") or resource.get("llmbuild.build") or self.d.build,
            reference=next((attrs[k] for k in (f"llmbuild.{r}" for r in self.d.reference_keys)
                            if isinstance(attrs.get(k), str)), None))]


_PYSTR = r"(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "(APIServer pid=1) INFO 12-01 08:00:00 [logger.py:43] message" (vllm/logger.py: _FORMAT, _DATE_FORMAT)
_VLLM_PREFIX = re.compile(r"^(?:\([^)]*\)\s+)?(?P<level>DEBUG|INFO|WARNING|ERROR)\s+(?P<date>\d\d-\d\d) "
                          r"(?P<clock>\d\d:\d\d:\d\d)(?:\.\d+)?\s+\[[^\]]*\]\s+(?P<msg>.*)$")
_VLLM_REQUEST = [
    re.compile(rf"^Received request (?P<id>[^\s:]+): prompt: (?P<prompt>{_PYSTR}), params: (?P<params>.*)$"),
    re.compile(rf"^Request (?P<id>[^\s:]+) details: prompt: (?P<prompt>{_PYSTR}), .*$"),
    re.compile(rf"^Received request (?P<id>[^\s:]+): params: (?P<params>.*), prompt: (?P<prompt>{_PYSTR})\.$"),
    re.compile(r"^Received request (?P<id>[^\s:]+): params: (?P<params>.*)$"),  # INFO without the prompt
]
_VLLM_OUTPUT = re.compile(rf"^Generated response (?P<id>[^\s:]+?)(?: \(streaming (?P<stream>delta|complete)\))?: "
                          rf"output: (?P<output>{_PYSTR}), (?:output_token_ids: .*?, )?finish_reason: (?P<finish>\S+)$")


class VLLMReader(Reader):
    name = "vllm"

    def __init__(self, defaults, year: int | None = None):
        super().__init__(defaults)
        self.year = year or datetime.now().year  # vLLM's log dates have no year; readers set the file's
        self.requests: dict[str, dict] = {}
        self.outputs: dict[str, dict] = {}
        self.ignored = 0

    def _time(self, m) -> float:
        return _time.mktime(datetime.strptime(f"{self.year}-{m['date']} {m['clock']}", "%Y-%m-%d %H:%M:%S").timetuple())

    def feed(self, line, where):
        m = _VLLM_PREFIX.match(_ANSI.sub("", line.rstrip("\n")))
        if not m:
            self.ignored += 1
            return []
        msg, t = m["msg"], self._time(m)
        if msg.startswith(("Received request ", "Request ")) and (" details: " in msg or msg.startswith("Received")):
            for rx in _VLLM_REQUEST:
                r = rx.match(msg)
                if r:
                    req = self.requests.setdefault(r["id"], {"where": where, "time": t, "prompt": None})
                    if r.groupdict().get("prompt"):
                        req["prompt"] = ast.literal_eval(r["prompt"])
                    return self._pair(r["id"])
            raise BadRecord("a vLLM request line in a shape this reader does not know")
        if msg.startswith("Generated response "):
            r = _VLLM_OUTPUT.match(msg)
            if not r:
                raise BadRecord("a vLLM output line in a shape this reader does not know")
            out = self.outputs.setdefault(r["id"], {"text": "", "deltas": "", "done": False})
            text = ast.literal_eval(r["output"])
            if r["stream"] == "delta":
                out["deltas"] += text
                if r["finish"] not in ("None", "null"):
                    out["done"] = True
            else:
                out["text"], out["done"] = text, True
            out.update(where=where, time=t, finish=None if r["finish"] in ("None", "null") else r["finish"])
            return self._pair(r["id"])
        self.ignored += 1
        return []

    def _pair(self, rid: str) -> list[Exchange]:
        req, out = self.requests.get(rid), self.outputs.get(rid)
        if not req or not out or not out["done"] or req["prompt"] is None:
            return []
        del self.requests[rid], self.outputs[rid]
        return [Exchange(where=out["where"], id=rid, time=req["time"], prompt=req["prompt"],
                         response=out["text"] or out["deltas"], finish_reason=out["finish"],
                         latency_s=max(0.0, out["time"] - req["time"]), model=self.d.model, build=self.d.build)]

    def finish(self):
        left = []
        for rid, req in self.requests.items():
            if req["prompt"] is None:
                left.append((req["where"], f"vLLM logged no prompt for request {rid} (start vLLM with "
                                           "--enable-log-request-prompts, or VLLM_LOGGING_LEVEL=DEBUG)"))
            elif rid not in self.outputs:
                left.append((req["where"], f"vLLM request {rid} has no output line (--enable-log-outputs)"))
            else:
                left.append((self.outputs[rid]["where"], f"vLLM request {rid}: streamed output never completed"))
        left += [(o["where"], f"vLLM output {rid} has no request line") for rid, o in self.outputs.items()
                 if rid not in self.requests]
        self.requests.clear()
        self.outputs.clear()
        return left


READERS = {"proxy": ProxyReader, "openai": OpenAIReader, "otlp": OTLPReader, "vllm": VLLMReader}


def sniff(path: Path) -> str:
    """The format of a log file from its first lines; InvalidInput when none fits."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ln for ln in (f.readline() for _ in range(200)) if ln.strip()]
    for ln in lines[:20]:
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            if rec.get("format") == PROXY_FORMAT:
                return "proxy"
            if "resourceSpans" in rec:
                return "otlp"
            if "custom_id" in rec or ("request" in rec and "response" in rec):
                return "openai"
    for ln in lines:
        m = _VLLM_PREFIX.match(_ANSI.sub("", ln))
        if m and m["msg"].startswith(("Received request ", "Generated response ", "Request ")):
            return "vllm"
    raise InvalidInput(f"logs: cannot tell the format of {path} from its first lines; set format= "
                       f"({', '.join(READERS)})")


def make_reader(fmt: str, path: Path, defaults: Defaults) -> Reader:
    if fmt not in READERS:
        raise InvalidInput(f"format: unknown log format {fmt!r}; known: auto, {', '.join(READERS)}")
    if fmt == "vllm":
        mtime = datetime.fromtimestamp(path.stat().st_mtime) if path.exists() else datetime.now()
        return VLLMReader(defaults, year=mtime.year)
    return READERS[fmt](defaults)


@dataclass
class ReadResult:
    exchanges: list[Exchange] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file:line, reason)
    files: list[dict] = field(default_factory=list)  # per file: path, format, lines, records, skipped, ignored


def check_files(paths: list[str]) -> list[Path]:
    out = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise InvalidInput(f"logs: {path} not found")
        out.append(path)
    return out


def read_logs(paths: list[str], fmt: str, defaults: Defaults) -> ReadResult:
    """Every exchange in the files; the lines that cannot be used are listed with file:line and reason."""
    files = check_files(paths)
    result = ReadResult()
    shared: dict[str, Reader] = {}  # one reader per format, so Batch API files pair across files
    readers = []
    for path in files:
        f = sniff(path) if fmt == "auto" else fmt
        reader = shared.get(f) if f == "openai" else None
        if reader is None:
            reader = make_reader(f, path, defaults)
            shared.setdefault(f, reader)
        readers.append(reader)
        stats = {"path": str(path), "format": f, "lines": 0, "records": 0, "skipped": 0, "ignored": 0}
        before = getattr(reader, "ignored", 0)
        try:
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    stats["lines"] += 1
                    where = f"{path.name}:{n}"
                    try:
                        got = reader.feed(line, where)
                    except BadRecord as e:
                        result.skipped.append((where, str(e)))
                        stats["skipped"] += 1
                        continue
                    parts = reader.take_skips(where)
                    result.skipped.extend(parts)
                    stats["skipped"] += len(parts)
                    result.exchanges.extend(got)
                    stats["records"] += len(got)
        except UnicodeDecodeError as e:
            raise InvalidInput(f"logs: {path} is not UTF-8 text (byte {e.start})") from None
        stats["ignored"] = getattr(reader, "ignored", 0) - before
        result.files.append(stats)
    for reader in dict.fromkeys(readers):
        left = reader.finish()
        result.skipped.extend(left)
        for where, _ in left:
            name = where.split(":")[0]
            for s in result.files:
                if Path(s["path"]).name == name:
                    s["skipped"] += 1
                    break
    result.exchanges.sort(key=lambda e: e.time)
    return result
