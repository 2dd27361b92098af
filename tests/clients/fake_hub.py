"""An offline stand-in for the Hugging Face Hub's HTTP API, as far as `create_repo` + `upload_folder` use it.

Endpoints (huggingface_hub 2.x, hf_api.py / _commit_api.py): POST /api/validate-yaml (the README's metadata,
checked with llmbuild's offline card checks), POST /api/repos/create, POST
/api/{type}s/{repo}/preupload/{revision} (answered "regular" for every file, so contents travel in the
commit and no LFS or Xet transfer is needed), POST /api/{type}s/{repo}/commit/{revision} (NDJSON:
a header line, then one line per file with base64 content). Committed files are kept in memory per
repo; `requests` records every call, so a test sees what the client sent. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "files": {path: bytes}, "commits": [...]}
        self.requests: list[tuple[str, str, dict]] = []
        self.validated: list[list[str]] = []  # the problems found in each README.md the client sent
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                return None

            def _send(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.requests.append(("POST", self.path, dict(self.headers)))
                if self.path == "/api/validate-yaml":  # the card's metadata, checked offline as the Hub would
                    from llmbuild.report.card_checks import problems

                    errors = problems(json.loads(raw)["content"])
                    hub.validated.append(errors)
                    return self._send(400 if errors else 200, {"errors": [{"message": e} for e in errors],
                                                               "warnings": []})
                if self.path == "/api/repos/create":
                    body = json.loads(raw)
                    repo = f"{body.get('organization') or 'user'}/{body['name']}"
                    hub.repos.setdefault(repo, {"private": bool(body.get("private")), "files": {}, "commits": []})
                    return self._send(200, {"url": f"{hub.url}/{repo}", "name": repo})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)", self.path)
                if not m or m.group(1) not in hub.repos:
                    return self._send(404, {"error": f"Repository not found: {self.path}"})
                repo, what = m.group(1), m.group(2)
                if what == "preupload":
                    files = json.loads(raw)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                lines = [json.loads(x) for x in raw.decode().splitlines() if x.strip()]
                header = next(x["value"] for x in lines if x["key"] == "header")
                for x in lines:
                    if x["key"] == "file":
                        v = x["value"]
                        hub.repos[repo]["files"][v["path"]] = base64.b64decode(v["content"])
                oid = f"{len(hub.repos[repo]['commits']) + 1:040x}"
                hub.repos[repo]["commits"].append({"oid": oid, "summary": header.get("summary")})
                return self._send(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid,
                                        "success": True})

            def do_GET(self):
                hub.requests.append(("GET", self.path, dict(self.headers)))
                return self._send(404, {"error": "not served by the stand-in"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
