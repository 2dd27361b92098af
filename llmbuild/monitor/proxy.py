"""`llmbuild-monitor proxy`: an OpenAI-compatible logging proxy in front of any server, on aiohttp.

Servers do not log prompt and response text by default (vLLM's traces carry usage only), so clients call
the proxy instead: every request is forwarded as is (body, headers but hop-by-hop ones, query string),
responses come back unchanged, streams chunk by chunk as they arrive. POSTs to /v1/chat/completions and
/v1/completions are logged after the response is complete, one JSON line each (appended with a single
write to a file opened O_APPEND, so lines never interleave):

    {"format": "llmbuild-monitor-proxy/1", "id": <response id>, "time": <request start, ISO 8601 UTC>,
     "latency_s": ..., "ttft_s": <first byte of a stream>, "status": 200, "stream": true|false,
     "path": "/v1/chat/completions", "upstream": ..., "model": ..., "build": <build id>,
     "sample_weight": 1/sample_rate, "request": <request body>, "response": <chat.completion; a stream is
     assembled from its chunks>, "error": null | "<why>"}

Request headers (Authorization included) are never logged. An unreachable upstream answers 502 with an
OpenAI-style error body, and the exchange is logged with status 502 (the monitor counts it as an error).
aiohttp is both the server and the keep-alive client, so the added latency is a fraction of a
millisecond (bench/monitor_proxy.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.monitor import endpoints, sampling
from llmbuild.monitor.readers import PROXY_FORMAT, assemble_stream

LOGGED_PATHS = ("/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}


class LogFile:
    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict) -> None:
        os.write(self.fd, (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))

    def close(self) -> None:
        os.close(self.fd)


def _sse_events(buffer: bytearray) -> list[dict]:
    """Complete `data:` events taken off the front of an SSE buffer (chunks may split events anywhere)."""
    out = []
    while True:
        text = bytes(buffer)
        cut = min((i for i in (text.find(b"\n\n"), text.find(b"\r\n\r\n")) if i >= 0), default=-1)
        if cut < 0:
            return out
        sep = 4 if text[cut:cut + 4] == b"\r\n\r\n" else 2
        event, rest = text[:cut], text[cut + sep:]
        buffer[:] = rest
        data = b"\n".join(line[5:].strip() for line in event.replace(b"\r\n", b"\n").split(b"\n")
                          if line.startswith(b"data:"))
        if data and data != b"[DONE]":
            try:
                obj = json.loads(data)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)


class Proxy:
    def __init__(self, cfg, build_id: str | None, log: LogFile):
        self.cfg = cfg
        self.upstream = endpoints.server_root(cfg.upstream)
        self.build_id = build_id
        self.log = log
        self.session = None

    async def start(self, app) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s), auto_decompress=True)

    async def stop(self, app) -> None:
        if self.session:
            await self.session.close()

    def record(self, *, rid, wall, latency, ttft, status, stream, path, req, resp, error) -> None:
        rid = rid or (resp or {}).get("id") or f"proxy-{uuid.uuid4()}"
        if not sampling.keep(rid, self.cfg.sample_rate, salt="proxy"):
            return
        self.log.append({
            "format": PROXY_FORMAT, "id": rid,
            "time": datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="milliseconds"),
            "latency_s": round(latency, 6), "ttft_s": None if ttft is None else round(ttft, 6), "status": status,
            "stream": stream, "path": path, "upstream": self.upstream,
            "model": (resp or {}).get("model") or (req or {}).get("model"), "build": self.build_id,
            "sample_weight": round(1.0 / self.cfg.sample_rate, 6), "request": req, "response": resp, "error": error})

    async def handle(self, request):
        import aiohttp
        from aiohttp import web

        body = await request.read()
        wall, t0 = time.time(), time.perf_counter()
        logged = request.method == "POST" and request.path in LOGGED_PATHS
        req = None
        if logged:
            try:
                req = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                req = None  # forwarded anyway: the server says what is wrong with it
            logged = isinstance(req, dict)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        stream = bool(logged and req.get("stream"))
        url = self.upstream + request.path_qs
        try:
            async with self.session.request(request.method, url, data=body, headers=headers) as up:
                out_headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
                if stream and up.status == 200 and "text/event-stream" in up.headers.get("Content-Type", ""):
                    resp = web.StreamResponse(status=up.status, headers=out_headers)
                    await resp.prepare(request)
                    buffer, chunks, ttft = bytearray(), [], None
                    async for data in up.content.iter_any():
                        await resp.write(data)
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        buffer += data
                        chunks.extend(_sse_events(buffer))
                    await resp.write_eof()
                    self.record(rid=chunks[0].get("id") if chunks else None, wall=wall,
                                latency=time.perf_counter() - t0, ttft=ttft, status=200, stream=True,
                                path=request.path, req=req, resp=assemble_stream(chunks) if chunks else None,
                                error=None if chunks else "the stream carried no chunks")
                    return resp
                data = await up.read()
                latency = time.perf_counter() - t0
                resp = web.Response(body=data, status=up.status, headers=out_headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            why = f"upstream {self.upstream} failed: {type(e).__name__}: {str(e) or 'timed out'}"
            if logged:
                self.record(rid=None, wall=wall, latency=time.perf_counter() - t0, ttft=None, status=502,
                            stream=stream, path=request.path, req=req, resp=None, error=why)
            return web.json_response({"error": {"message": f"llmbuild-monitor proxy: {why}", "type": "upstream_error",
                                                "code": 502}}, status=502)
        if logged:
            parsed, err = None, None
            try:
                parsed = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError):
                err = "the response is not JSON"
            if up.status >= 400:
                err = (data[:300].decode("utf-8", "replace")) or f"HTTP {up.status}"
                parsed = None
            # written after the response is handed back: logging adds no latency to the client
            asyncio.get_running_loop().call_soon(lambda: self.record(
                rid=(parsed or {}).get("id") if isinstance(parsed, dict) else None, wall=wall, latency=latency,
                ttft=None, status=up.status, stream=stream, path=request.path, req=req,
                resp=parsed if isinstance(parsed, dict) else None, error=err))
        return resp


def make_app(proxy: Proxy):
    from aiohttp import web

    app = web.Application(client_max_size=64 * 1024 * 1024)  # long prompts with many passages
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.stop)
    return app


def serve(cfg) -> int:
    """Run until SIGINT/SIGTERM; exit 2 when the log, the listen address or the upstream is unusable."""
    from aiohttp import web

    from llmbuild.monitor.builds import build_info
    from llmbuild.monitor.config import host_port

    host, port = host_port(cfg.listen, "listen")
    log_path = Path(cfg.log).expanduser()
    if log_path.is_dir() or not log_path.parent.is_dir():
        raise InvalidInput(f"log: {log_path} is a folder or its folder does not exist")
    build_id = build_info(cfg.build)["id"] if cfg.build else None
    if cfg.check_upstream:
        endpoints.models(cfg.upstream, "upstream", timeout_s=10)
    log = LogFile(log_path)
    proxy = Proxy(cfg, build_id, log)

    async def main():
        runner = web.AppRunner(make_app(proxy), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            await runner.cleanup()
            raise InvalidInput(f"listen: cannot listen on {host}:{port} ({e.strerror or e})") from None
        print(f"llmbuild-monitor: proxy http://{host}:{port} -> {proxy.upstream}, logging to {log_path}",
              file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        log.close()
    return 0
