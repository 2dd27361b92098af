"""Deterministic sampling with the weights that keep rates unbiased.

A record is kept when a hash of its id falls below the rate, so the same logs give the same sample on
every run and in follow mode (no RNG state to lose across restarts), and the proxy and the monitor make
the same decision for the same id. A kept record's weight is multiplied by 1/rate (Horvitz-Thompson):
weighted rates estimate the rates of all traffic, and the intervals widen by the design effect
(intervals.py). Ids are unique per response, so the hash is as good as a coin.
"""

from __future__ import annotations

import hashlib


def keep(record_id: str, rate: float, salt: str = "") -> bool:
    if rate >= 1.0:
        return True
    h = hashlib.blake2b(f"{salt}{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2 ** 64 < rate


def sample(exchanges: list, rate: float, salt: str = "monitor") -> list:
    """The kept exchanges, each with its weight divided by the rate."""
    if rate >= 1.0:
        return list(exchanges)
    kept = []
    for ex in exchanges:
        if keep(ex.id, rate, salt):
            ex.weight = ex.weight / rate
            kept.append(ex)
    return kept
