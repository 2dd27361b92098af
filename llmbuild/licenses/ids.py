"""License identifiers: what users and model cards write, resolved to knowledge-base keys.

Accepted: the Hub's ids (`llama3.1`, `apache-2.0`; `other` with `license_name` / `license_link`),
SPDX ids and expressions (`Apache-2.0 OR MIT`, `LicenseRef-scancode-llama-2-license-2023`), the
record keys, and the aliases each record lists (`llama-2`, `Llama2`, `meta-llama-3.1`). Spelling is
matched ignoring case, spaces, `-` and `_`. Expressions are parsed by `license-expression` with our
records as its symbols, so Hub ids and SPDX ids mix freely. The result is an OR of ANDs: any one
alternative, with all its licenses, is a way to comply.

An unknown id is never silently accepted: `InvalidInput` names the closest known keys, unless the
caller allows unknown licenses, in which case the unknown symbol is kept as `?name`.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from llmbuild.errors import InvalidInput
from llmbuild.licenses import kb as kb_mod

UNKNOWN_PREFIX = "?"  # marks a license the knowledge base does not know (allowed by license.unknown)
_SYMBOL_SAFE = re.compile(r"^[A-Za-z0-9.+_\-]+$")  # aliases license-expression can tokenize
_OPERATORS = re.compile(r"(^|\s)(AND|OR|WITH)(\s|$)|[()]", re.I)


@dataclass
class Resolved:
    """A license reference resolved to keys: `alternatives` is an OR of ANDs of record keys."""

    text: str  # what was written
    alternatives: list[tuple[str, ...]]
    how: str  # "alias", "expression", "other+license_name", "other+license_link", "unknown"

    @property
    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for alt in self.alternatives for k in alt))

    @property
    def expression(self) -> str:
        return expression(self.alternatives)


def expression(alternatives: list[tuple[str, ...]]) -> str:
    """Readable form of an OR of ANDs, e.g. '(llama3.1 AND apache-2.0) OR mit'."""
    parts = [" AND ".join(a) for a in alternatives]
    if len(parts) == 1:
        return parts[0]
    return " OR ".join(f"({p})" if " AND " in p else p for p in parts)


def norm(s: str) -> str:
    return re.sub(r"[\s_\-]+", "", s.strip().lower())


def _names(rec: dict) -> list[str]:
    names = [rec["key"], *(rec.get("aliases") or [])]
    for f in ("hf_license_name", "spdx", "scancode"):
        if rec.get(f):
            names.append(rec[f])
    if rec.get("hf_license") and rec["hf_license"] != "other":
        names.append(rec["hf_license"])
    sc = rec.get("scancode") or ""
    if sc.startswith("LicenseRef-scancode-"):
        names.append(sc[len("LicenseRef-scancode-"):])
    return names


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, str]]:
    """(normalized name -> key, link -> key); a name claimed by two records is a data bug."""
    by_name: dict[str, str] = {}
    by_link: dict[str, str] = {}
    for key, rec in kb_mod.load().records.items():
        for n in _names(rec):
            k = norm(n)
            if by_name.get(k, key) != key:
                raise ValueError(f"licenses.yaml: name {n!r} is claimed by {by_name[k]} and {key}")
            by_name[k] = key
        for f in ("url", "hf_license_link"):
            if rec.get(f):
                by_link[rec[f].rstrip("/").lower()] = key
    return by_name, by_link


@functools.lru_cache(maxsize=1)
def _licensing():
    from license_expression import LicenseSymbol, Licensing

    symbols = []
    for key, rec in kb_mod.load().records.items():
        aliases = {n for n in _names(rec) if _SYMBOL_SAFE.match(n) and n.lower() != key.lower()}
        symbols.append(LicenseSymbol(key, aliases=tuple(sorted(aliases))))
    return Licensing(symbols)


def lookup(name: str) -> str | None:
    """The record key for one id or alias, or None."""
    return _tables()[0].get(norm(name))


def closest(name: str, n: int = 5) -> list[str]:
    """The record keys whose names look most like `name` (for error messages)."""
    by_name = _tables()[0]
    hits = difflib.get_close_matches(norm(name), list(by_name), n=4 * n, cutoff=0.6)
    return list(dict.fromkeys(by_name[h] for h in hits))[:n]


def _unknown_message(key: str, what: str, allow_hint: bool) -> str:
    near = closest(what)
    msg = f"{key}: unknown license '{what}'"
    if _is_spdx(what):
        msg += " (a valid SPDX id, but llmbuild has no clause record for it)"
    msg += f"; closest known ids: {', '.join(near)}" if near else "; no known id is close (see `llmbuild-license list`)"
    if allow_hint:
        msg += " (or set license.unknown: allow to build anyway, recorded in the report)"
    return msg


@functools.lru_cache(maxsize=1)
def spdx_licensing():
    """license-expression's SPDX index, built once per process (each get_spdx_licensing() call rebuilds it
    from the license list: 40 ms)."""
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def _is_spdx(token: str) -> bool:
    try:
        return not spdx_licensing().validate(token).errors
    except Exception:  # license-expression raises AttributeError on some malformed input
        return False


def resolve(value: str, *, key: str = "license.id", name: str | None = None, link: str | None = None,
            allow_unknown: bool = False, allow_hint: bool = True) -> Resolved:
    """Resolve an id, alias or SPDX expression; InvalidInput (naming `key`) when unknown or malformed."""
    text = str(value).strip()
    if not text:
        raise InvalidInput(f"{key}: empty license id")
    low = text.lower()
    if low in ("other", "unknown"):
        if low == "other":
            if name and lookup(name):
                return Resolved(text, [(lookup(name),)], "other+license_name")
            hit = _tables()[1].get((link or "").rstrip("/").lower())
            if hit:
                return Resolved(text, [(hit,)], "other+license_link")
        label = name or low
        if allow_unknown:
            return Resolved(text, [(UNKNOWN_PREFIX + label,)], "unknown")
        detail = f"'{text}' with license_name '{name}'" if name else f"'{text}'"
        if link:
            detail += f" and license_link {link}"
        near = closest(name) if name else []
        msg = f"{key}: unknown license {detail}"
        msg += f"; closest known ids: {', '.join(near)}" if near else "; name a known id (see `llmbuild-license list`)"
        if allow_hint:
            msg += " (or set license.unknown: allow to build anyway, recorded in the report)"
        raise InvalidInput(msg)
    direct = lookup(text)
    if direct:
        return Resolved(text, [(direct,)], "alias")
    if not _OPERATORS.search(text):
        if allow_unknown:
            return Resolved(text, [(UNKNOWN_PREFIX + text,)], "unknown")
        raise InvalidInput(_unknown_message(key, text, allow_hint))
    return _resolve_expression(text, key, allow_unknown, allow_hint)


def _resolve_expression(text: str, key: str, allow_unknown: bool, allow_hint: bool) -> Resolved:
    lic = _licensing()
    try:
        info = lic.validate(text)
        errors, invalid = list(info.errors), [s for s in info.invalid_symbols if s]
    except Exception:  # license-expression 30.4 raises AttributeError on a dangling operator
        errors, invalid = ["incomplete expression (an operator without a license beside it)"], []
    only_unknown = errors and all(e.startswith("Unknown license key") for e in errors)
    if errors and not only_unknown:
        raise InvalidInput(f"{key}: malformed license expression '{text}': {errors[0]}")
    if only_unknown and not allow_unknown:
        raise InvalidInput(_unknown_message(key, invalid[0] if invalid else text, allow_hint))
    parsed = lic.parse(text, validate=False)
    return Resolved(text, _dnf(lic, parsed), "expression")


def _dnf(lic, node) -> list[tuple[str, ...]]:
    """An OR of ANDs of keys for a parsed expression (unknown symbols become '?name')."""
    if isinstance(node, lic.OR):
        return [alt for arg in node.args for alt in _dnf(lic, arg)]
    if isinstance(node, lic.AND):
        out: list[tuple[str, ...]] = [()]
        for arg in node.args:
            out = [tuple(dict.fromkeys(a + b)) for a in out for b in _dnf(lic, arg)]
        return out
    sym = getattr(node, "license_symbol", node)  # `X WITH exception` is evaluated as X
    key = sym.key if sym.key in kb_mod.load().records else (lookup(sym.key) or UNKNOWN_PREFIX + sym.key)
    return [(key,)]


def conjoin(*readings: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """AND of several OR-of-AND readings (the stricter reading of a tag and a text that disagree)."""
    out: list[tuple[str, ...]] = [()]
    for r in readings:
        out = [tuple(dict.fromkeys(a + b)) for a in out for b in r]
    # drop alternatives that are supersets of another (A OR (A AND B) == A)
    uniq = list(dict.fromkeys(out))
    return [a for a in uniq if not any(set(b) < set(a) for b in uniq)]
