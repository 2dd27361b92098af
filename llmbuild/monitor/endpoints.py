"""OpenAI-compatible endpoints as a client sees them (aiohttp): base URLs, a reachability check that
fails with one line and exit 2, and JSON calls with bounded retries."""

from __future__ import annotations

import asyncio
import json

from llmbuild.errors import InvalidInput

RETRY_STATUS = (429, 500, 502, 503, 504)


def api_base(url: str) -> str:
    """http://host:port[/v1] -> http://host:port/v1 (servers mount the OpenAI API under /v1)."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def server_root(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


async def _get(url: str, timeout_s: float, headers: dict | None = None):
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s, \
            s.get(url, headers=headers or {}) as r:
        body = await r.text()
        return r.status, body


def models(url: str, key: str, timeout_s: float = 10.0, headers: dict | None = None) -> list[str]:
    """The endpoint's model ids (GET /v1/models); InvalidInput naming `key` when it cannot be reached."""
    import aiohttp

    target = api_base(url) + "/models"
    try:
        status, body = asyncio.run(_get(target, timeout_s, headers))
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise InvalidInput(f"{key}: {url} is unreachable ({type(e).__name__}: {str(e) or 'timed out'})") from None
    if status >= 400:
        raise InvalidInput(f"{key}: {target} answered HTTP {status}")
    try:
        data = json.loads(body)
        return [str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m]
    except (json.JSONDecodeError, AttributeError, TypeError):
        raise InvalidInput(f"{key}: {target} did not answer with an OpenAI model list") from None


async def post_json(session, url: str, payload: dict, headers: dict | None = None, retries: int = 2) -> dict:
    """POST a JSON body, retrying rate limits and server errors with a short backoff."""
    import aiohttp

    for attempt in range(retries + 1):
        try:
            async with session.post(url, json=payload, headers=headers or {}) as r:
                text = await r.text()
                if r.status in RETRY_STATUS and attempt < retries:
                    await asyncio.sleep(0.5 * 2 ** attempt)
                    continue
                if r.status >= 400:
                    raise RuntimeError(f"HTTP {r.status} from {url}: {text[:200]}")
                return json.loads(text)
        except (TimeoutError, aiohttp.ClientConnectionError):
            if attempt >= retries:
                raise
            await asyncio.sleep(0.5 * 2 ** attempt)
    raise RuntimeError("unreachable")
