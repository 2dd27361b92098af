"""Each log format, with records shaped as their specifications and servers write them."""

from __future__ import annotations

import json

import pytest

from llmbuild.errors import InvalidInput
from llmbuild.monitor.readers import Defaults, read_logs, sniff
from tests.monitor.helpers import ALCE_PROMPT, chat_response, proxy_record, write_jsonl

D = Defaults(model="served-model", build="b1", reference_keys=["reference"])


def test_proxy_records_and_bad_lines(tmp_path):
    log = write_jsonl(tmp_path / "prod.jsonl", [
        proxy_record("a", "Paris is the capital of France [1].", reference="Paris"),
        "this is not json",
        {"format": "llmbuild-monitor-proxy/1", "id": "no-time", "request": {"messages": []}},
        proxy_record("b", "", status=502),
        "[1, 2]",
    ])
    r = read_logs([str(log)], "proxy", D)
    assert [e.id for e in r.exchanges] == ["a", "b"]
    a, b = r.exchanges
    assert a.response.startswith("Paris") and a.reference == "Paris" and a.messages[0]["content"] == ALCE_PROMPT
    assert b.failed and b.status == 502
    assert r.skipped == [("prod.jsonl:2", "not valid JSON (Expecting value at column 1)"),
                         ("prod.jsonl:3", "a proxy record needs 'time'"),
                         ("prod.jsonl:5", "a record must be a JSON object")]
    assert r.files[0] | {} == {"path": str(log), "format": "proxy", "lines": 5, "records": 2, "skipped": 3, "ignored": 0}


def test_openai_pairs_streams_and_parts(tmp_path):
    """{"request", "response"} per line; a streamed response as its chat.completion.chunk objects; content parts."""
    chunks = [{"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1764576000, "model": "gpt-x",
               "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
              {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1764576000, "model": "gpt-x",
               "choices": [{"index": 0, "delta": {"content": "Madrid is "}, "finish_reason": None}]},
              {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1764576000, "model": "gpt-x",
               "choices": [{"index": 0, "delta": {"content": "the capital [2]."}, "finish_reason": "stop"}]}]
    parts = {"role": "user", "content": [{"type": "text", "text": "Document [1]: Lima is in Peru."},
                                          {"type": "text", "text": "Where is Lima?"}]}
    log = write_jsonl(tmp_path / "openai.jsonl", [
        {"request": {"model": "gpt-x", "messages": [{"role": "user", "content": ALCE_PROMPT}]},
         "response": chat_response("chatcmpl-1", "Paris [1].", "gpt-x", created=1764576000)},
        {"timestamp": "2025-12-01T08:00:00Z", "request": {"model": "gpt-x", "messages": [parts], "stream": True},
         "response": chunks},
        {"request": {"model": "gpt-x"}, "response": chat_response("x", "hi")},
    ])
    assert sniff(log) == "openai"
    r = read_logs([str(log)], "auto", D)
    assert [e.response for e in r.exchanges] == ["Paris [1].", "Madrid is the capital [2]."]
    assert r.exchanges[1].messages[0]["content"] == "Document [1]: Lima is in Peru.\nWhere is Lima?"
    assert r.exchanges[1].finish_reason == "stop" and r.exchanges[1].model == "gpt-x"
    assert r.exchanges[0].time == 1764576000.0
    assert r.skipped == [("openai.jsonl:3", "the request has neither 'messages' nor 'prompt'")]


def test_openai_batch_api_files_pair_by_custom_id(tmp_path):
    """The Batch API's input and output files (platform.openai.com/docs/guides/batch), given together."""
    inp = write_jsonl(tmp_path / "batch_input.jsonl", [
        {"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gpt-x", "messages": [{"role": "user", "content": ALCE_PROMPT}], "max_tokens": 100}},
        {"custom_id": "request-2", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gpt-x", "messages": [{"role": "user", "content": "Hi"}]}},
    ])
    out = write_jsonl(tmp_path / "batch_output.jsonl", [
        {"id": "batch_req_1", "custom_id": "request-1",
         "response": {"status_code": 200, "request_id": "req_1", "body": chat_response("chatcmpl-1", "Paris [1].")},
         "error": None},
        {"id": "batch_req_3", "custom_id": "request-3", "response": None,
         "error": {"code": "server_error", "message": "failed"}},
    ])
    r = read_logs([str(inp), str(out)], "openai", D)
    assert [(e.id, e.response) for e in r.exchanges] == [("chatcmpl-1", "Paris [1].")]
    assert sorted(r.skipped) == [("batch_input.jsonl:2", "Batch API request 'request-2' has no output line"),
                                 ("batch_output.jsonl:2", "Batch API output 'request-3' has no request line")]


def _span(attrs: list, span_id="00f067aa0ba902b7", events=()):
    return {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": span_id, "name": "chat gpt-4", "kind": 3,
            "startTimeUnixNano": "1764576000000000000", "endTimeUnixNano": "1764576001500000000",
            "attributes": attrs, "events": list(events), "status": {}}


def _s(k, v):
    return {"key": k, "value": {"stringValue": v}}


def test_otlp_genai_spans(tmp_path):
    """OTLP/JSON as the Collector's file exporter writes it; GenAI content as JSON strings and as structured
    AnyValues (semantic-conventions docs/gen-ai/non-normative/examples-llm-calls.md)."""
    input_messages = [{"role": "system", "parts": [{"type": "text", "content": "Use the documents."}]},
                      {"role": "user", "parts": [{"type": "text", "content": ALCE_PROMPT}]}]
    output_messages = [{"role": "assistant", "parts": [{"type": "text", "content": "Paris is the capital [1]."}],
                        "finish_reason": "stop"}]
    structured_out = {"arrayValue": {"values": [{"kvlistValue": {"values": [
        {"key": "role", "value": {"stringValue": "assistant"}},
        {"key": "parts", "value": {"arrayValue": {"values": [{"kvlistValue": {"values": [
            {"key": "type", "value": {"stringValue": "text"}},
            {"key": "content", "value": {"stringValue": "Madrid [2]."}}]}}]}}},
        {"key": "finish_reason", "value": {"stringValue": "stop"}}]}}]}}
    tool_input = [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
                  {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy, 57F"}]}]
    common = [_s("gen_ai.operation.name", "chat"), _s("gen_ai.provider.name", "openai"),
              _s("gen_ai.request.model", "gpt-4"), _s("gen_ai.response.model", "gpt-4-0613"),
              {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "52"}}]
    export = {"resourceSpans": [{"resource": {"attributes": [_s("service.name", "rag-app")]}, "scopeSpans": [{
        "scope": {"name": "opentelemetry.instrumentation.openai_v2"},
        "spans": [
            _span(common + [_s("gen_ai.response.id", "chatcmpl-1"), _s("gen_ai.input.messages", json.dumps(input_messages)),
                            _s("gen_ai.output.messages", json.dumps(output_messages))]),
            _span(common + [_s("gen_ai.input.messages", json.dumps(input_messages)),
                            {"key": "gen_ai.output.messages", "value": structured_out}], span_id="00f067aa0ba902b8"),
            _span(common + [_s("gen_ai.input.messages", json.dumps(tool_input)),
                            _s("gen_ai.output.messages", json.dumps(output_messages))], span_id="00f067aa0ba902b9"),
            _span(common, span_id="00f067aa0ba902ba"),  # content capture off: usage only
            _span([_s("http.request.method", "POST")], span_id="00f067aa0ba902bb"),  # not a GenAI span
        ]}]}]}
    log = write_jsonl(tmp_path / "traces.jsonl", [export])
    assert sniff(log) == "otlp"
    r = read_logs([str(log)], "auto", D)
    a, b, c = r.exchanges
    assert (a.id, a.response, a.model, a.latency_s) == ("chatcmpl-1", "Paris is the capital [1].", "gpt-4-0613", 1.5)
    assert a.messages[0] == {"role": "system", "content": "Use the documents."} and a.time == 1764576000.0
    assert b.response == "Madrid [2]." and b.id == "00f067aa0ba902b8"
    assert c.messages[1] == {"role": "tool", "content": "rainy, 57F", "tool_call_id": "call_1"}
    assert r.skipped == [("traces.jsonl:1", "span 00f067aa0ba902ba: a GenAI span without gen_ai.input.messages/"
                                            "gen_ai.output.messages (content capture is off in the instrumentation)")]
    assert r.files[0]["ignored"] == 1


VLLM = """INFO 12-01 08:00:00 [api_server.py:1080] Starting vLLM API server 0 on http://0.0.0.0:8000
INFO 12-01 08:00:01 [logger.py:43] Received request chatcmpl-aaa: prompt: '<|im_start|>user\\nDocument [1](Title: France): Paris is the capital of France.\\n\\nQuestion: capital?<|im_end|>\\n<|im_start|>assistant\\n', params: SamplingParams(n=1, presence_penalty=0.0, temperature=0.0, max_tokens=64), prompt_token_ids: [1, 2, 3], prompt_embeds shape: None, lora_request: None, prompt_adapter_request: None.
INFO 12-01 08:00:02 [logger.py:71] Generated response chatcmpl-aaa: output: "Paris is the capital [1]. It's big.", output_token_ids: [5, 6], finish_reason: stop
(APIServer pid=7) DEBUG 12-01 08:00:03 [logger.py:80] Request chatcmpl-bbb details: prompt: 'Q: where is Lima?', prompt_token_ids: [1, 2], prompt_embeds shape: None.
(APIServer pid=7) INFO 12-01 08:00:03 [logger.py:93] Received request chatcmpl-bbb: params: SamplingParams(n=1, temperature=0.0), lora_request: None.
(APIServer pid=7) INFO 12-01 08:00:04 [logger.py:71] Generated response chatcmpl-bbb (streaming delta): output: 'In ', output_token_ids: [7], finish_reason: None
(APIServer pid=7) INFO 12-01 08:00:04 [logger.py:71] Generated response chatcmpl-bbb (streaming delta): output: 'Peru.', output_token_ids: [8], finish_reason: None
(APIServer pid=7) INFO 12-01 08:00:05 [logger.py:71] Generated response chatcmpl-bbb (streaming complete): output: 'In Peru.', output_token_ids: None, finish_reason: streaming_complete
(APIServer pid=7) INFO 12-01 08:00:06 [logger.py:93] Received request chatcmpl-ccc: params: SamplingParams(n=1), lora_request: None.
(APIServer pid=7) INFO 12-01 08:00:07 [logger.py:71] Generated response chatcmpl-ccc: output: 'Hello', output_token_ids: [9], finish_reason: stop
(APIServer pid=7) INFO 12-01 08:00:08 [logger.py:93] Received request chatcmpl-ddd: params: SamplingParams(n=1), lora_request: None, prompt: 'Say hi'.
(APIServer pid=7) INFO 12-01 08:00:09 [logger.py:71] Generated response chatcmpl-eee: output: 'orphan', finish_reason: stop
INFO 12-01 08:00:10 [metrics.py:455] Avg prompt throughput: 0.0 tokens/s
"""


def test_vllm_request_and_output_lines(tmp_path):
    """vLLM's RequestLogger lines in the shapes of its releases (vllm/entrypoints/logger.py)."""
    log = tmp_path / "vllm.log"
    log.write_text(VLLM)
    assert sniff(log) == "vllm"
    r = read_logs([str(log)], "auto", Defaults(model="Qwen/Qwen2.5-0.5B"))
    by = {e.id: e for e in r.exchanges}
    assert set(by) == {"chatcmpl-aaa", "chatcmpl-bbb"}
    a = by["chatcmpl-aaa"]
    assert a.prompt.startswith("<|im_start|>user\nDocument [1](Title: France): Paris")
    assert a.response == "Paris is the capital [1]. It's big." and a.finish_reason == "stop"
    assert a.latency_s == 1.0 and a.model == "Qwen/Qwen2.5-0.5B" and a.where == "vllm.log:3"
    assert by["chatcmpl-bbb"].response == "In Peru." and by["chatcmpl-bbb"].prompt == "Q: where is Lima?"
    reasons = dict((w, why) for w, why in r.skipped)
    assert "--enable-log-request-prompts" in reasons["vllm.log:9"]
    assert reasons["vllm.log:11"] == "vLLM request chatcmpl-ddd has no output line (--enable-log-outputs)"
    assert reasons["vllm.log:12"] == "vLLM output chatcmpl-eee has no request line"
    assert r.files[0]["ignored"] == 2  # the server's other lines are not exchanges


def test_unknown_content_is_refused_with_the_file(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("hello\nworld\n")
    with pytest.raises(InvalidInput, match=r"logs: cannot tell the format of .*x.log"):
        read_logs([str(log)], "auto", D)
    with pytest.raises(InvalidInput, match="format: unknown log format 'xml'"):
        read_logs([str(log)], "xml", D)
    with pytest.raises(InvalidInput, match="logs: .*missing.jsonl not found"):
        read_logs([str(tmp_path / "missing.jsonl")], "proxy", D)
