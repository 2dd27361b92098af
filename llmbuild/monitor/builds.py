"""What the monitor reads from a build folder: its id and model name (labels), eval.json (golden figures)."""

from __future__ import annotations

import json
from pathlib import Path

from llmbuild.errors import InvalidInput


def build_info(path: str, key: str = "build") -> dict:
    d = Path(path).expanduser()
    if not d.is_dir():
        raise InvalidInput(f"{key}: {d} is not a build folder")
    d = d.resolve()
    man = d / "manifest.json"
    if not man.is_file():
        raise InvalidInput(f"{key}: {d} has no manifest.json: not an llmbuild build folder")
    try:
        m = json.loads(man.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{key}: {man} is not valid JSON ({e})") from None
    ev = d / "eval.json"
    evaluation = None
    if ev.is_file():
        try:
            evaluation = json.loads(ev.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidInput(f"{key}: {ev} is not valid JSON ({e})") from None
    return {"dir": d, "id": str(m.get("build_id") or d.name), "model_name": m.get("model_name"),
            "recipe": m.get("recipe"), "artifacts": m.get("artifacts") or {}, "eval": evaluation}


def inside_build(path: Path) -> Path | None:
    """The build folder that `path` would be inside (a parent holding manifest.json), if any."""
    p = path.resolve()
    for parent in [p, *p.parents]:
        if (parent / "manifest.json").is_file() and (parent / "artifacts").is_dir():
            return parent
    return None
