"""The judge scorer: an OpenAI-compatible chat endpoint asked, at temperature 0, a fixed, versioned question.

The prompt is MiniCheck's fact-checking instruction (Tang, Laban & Durrett 2024, minicheck/utils.py) cut to
a one-word answer. The support probability is P(Yes) / (P(Yes) + P(No)) from the first token's top
logprobs when the server returns them (llama.cpp's server and vLLM do), as Bespoke-MiniCheck-7B is read;
otherwise the answer's first word (yes -> 1, no -> 0). An answer that is neither is scored 0 and counted
(`unparsed` in the report), never NaN. Requests carry temperature 0, top_p 1 and seed 0, so a server
that is deterministic at temperature 0 gives the same scores run after run; the prompt's version and
sha256 go into every result, so a changed prompt is a changed scorer. `max_calls` caps what a run may
spend; identical (premise, claim) pairs are asked once.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re

from llmbuild.errors import InvalidInput
from llmbuild.monitor import endpoints
from llmbuild.monitor.scorers import Scorer

PROMPT_VERSION = "llmbuild-judge-v1"
SYSTEM = ("Determine whether the provided claim is consistent with the corresponding document. Consistency in "
          "this context implies that all information presented in the claim is substantiated by the document. "
          "If not, it should be considered inconsistent. Answer with one word: Yes or No.")
USER = "Document: {premise}\nClaim: {claim}"
PROMPT_SHA256 = hashlib.sha256(f"{SYSTEM}\n{USER}".encode()).hexdigest()
_FIRST_WORD = re.compile(r"[A-Za-z]+")


def support_from(choice: dict) -> float | None:
    """The support probability from one chat choice: logprobs first, else the answer's first word."""
    content = ((choice.get("logprobs") or {}).get("content") or []) if isinstance(choice.get("logprobs"), dict) else []
    if content and isinstance(content[0], dict):
        tops = content[0].get("top_logprobs") or [content[0]]
        p_yes = sum(math.exp(t["logprob"]) for t in tops if str(t.get("token", "")).strip().lower() == "yes")
        p_no = sum(math.exp(t["logprob"]) for t in tops if str(t.get("token", "")).strip().lower() == "no")
        if p_yes + p_no > 0:
            return p_yes / (p_yes + p_no)
    text = ((choice.get("message") or {}).get("content") or "").strip()
    m = _FIRST_WORD.search(text)
    word = m.group(0).lower() if m else ""
    return {"yes": 1.0, "no": 0.0}.get(word)


class JudgeScorer(Scorer):
    name = "judge"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.url = endpoints.api_base(cfg.endpoint)
        self.headers = {}
        if cfg.api_key_env:
            token = os.environ.get(cfg.api_key_env)
            if not token:
                raise InvalidInput(f"scorer.api_key_env: the environment variable {cfg.api_key_env} is not set")
            self.headers["Authorization"] = f"Bearer {token}"
        served = endpoints.models(cfg.endpoint, "scorer.endpoint", cfg.timeout_s, self.headers)
        self.model = cfg.model or (served[0] if served else "default")
        self.unparsed = 0

    @property
    def info(self):
        return {"name": self.name, "threshold": self.threshold, "endpoint": self.cfg.endpoint, "model": self.model,
                "prompt_version": PROMPT_VERSION, "prompt_sha256": PROMPT_SHA256, "temperature": 0,
                "unparsed": self.unparsed}

    def payload(self, premise: str, claim: str) -> dict:
        return {"model": self.model, "temperature": 0, "top_p": 1, "seed": 0, "max_tokens": 2, "logprobs": True,
                "top_logprobs": 5, "messages": [{"role": "system", "content": SYSTEM},
                                                {"role": "user", "content": USER.format(premise=premise, claim=claim)}]}

    def _score(self, pairs):
        cap = self.cfg.max_calls
        if cap and self.calls + len(pairs) > cap:
            raise InvalidInput(f"scorer.max_calls: this run needs {self.calls + len(pairs)} judge calls, over the cap "
                               f"of {cap}; raise it or lower sample_rate")
        return asyncio.run(self._all(pairs))

    async def _all(self, pairs):
        import aiohttp

        sem = asyncio.Semaphore(self.cfg.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async def one(pair):
                async with sem:
                    try:
                        body = await endpoints.post_json(session, self.url + "/chat/completions",
                                                         self.payload(*pair), self.headers)
                    except (TimeoutError, aiohttp.ClientError, RuntimeError, ValueError) as e:
                        raise InvalidInput(f"scorer.endpoint: {self.cfg.endpoint} failed during scoring "
                                           f"({type(e).__name__}: {str(e)[:160]})") from None
                    choices = body.get("choices") or [{}]
                    s = support_from(choices[0])
                    if s is None:
                        self.unparsed += 1
                        return 0.0
                    return s

            return await asyncio.gather(*(one(p) for p in pairs))


def load(cfg) -> JudgeScorer:
    return JudgeScorer(cfg)
