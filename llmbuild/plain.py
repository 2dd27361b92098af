"""Plain JSON values from llmbuild's typed objects: what cache keys, records and the manifest hold."""

from __future__ import annotations

import dataclasses


def plain(obj):
    """Dataclasses and enums as JSON-able values (dicts, lists, strings, numbers)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "value") and obj.__class__.__module__ != "builtins":
        return obj.value
    return obj
