"""Read what a model snapshot says about its license: the card's tag and the license file's text.

Two independent witnesses, because community repos often carry a wrong tag (a GGUF of Codestral
tagged apache-2.0 while its LICENSE is the MNPL):
- README.md YAML front matter: `license` (a Hub id, or `other` with `license_name`/`license_link`);
- LICENSE* / LICENCE* files: hashed (sha256) and recognised, first by the hash of a byte-exact text
  we ship, then by the distinctive phrases each record lists (`text_markers`; longest match wins).
USE_POLICY* files are hashed and recognised the same way (`use_policy_markers`), NOTICE* files are
hashed. Whether the witnesses agree is decided by policy.py, which takes the stricter reading.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from llmbuild.errors import InvalidInput
from llmbuild.licenses import ids
from llmbuild.licenses import kb as kb_mod

_LICENSE_PREFIXES = ("LICENSE", "LICENCE")
_POLICY_PREFIXES = ("USE_POLICY", "ACCEPTABLE_USE_POLICY")
_NOTICE_PREFIXES = ("NOTICE",)
# architectures whose name says the model takes more than text (the Llama 3.2+ EU clause is about these)
_MULTIMODAL_ARCH = re.compile(r"Vision|ConditionalGeneration|Mllama|Llava|ImageText", re.I)


@dataclass
class FileInfo:
    name: str
    sha256: str
    size: int
    recognised_as: Optional[str] = None  # a knowledge-base key
    by: Optional[str] = None  # "sha256" (byte-exact known text) or "phrase"
    phrase: Optional[str] = None  # the marker that matched


@dataclass
class Detected:
    readme: Optional[dict] = None  # front-matter license fields as written: license, license_name, license_link
    tag: Optional[ids.Resolved] = None  # the tag resolved (unknown ids kept as '?name')
    license_files: list[FileInfo] = field(default_factory=list)
    use_policy_files: list[FileInfo] = field(default_factory=list)
    notice_files: list[FileInfo] = field(default_factory=list)
    multimodal: Optional[bool] = None  # from config.json; None when there is none

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tag"] = None if self.tag is None else {"text": self.tag.text, "resolved": self.tag.expression}
        return d


def normalize(text: str) -> str:
    """Text for phrase matching: no markdown emphasis or escapes, straight quotes, one space, lower case."""
    text = text.replace("\\", "")
    text = re.sub(r"[*#`>|]", " ", text)
    text = text.translate(str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "–": "-", "—": "-"}))
    return re.sub(r"\s+", " ", text).strip().lower()


def recognise(data: bytes, kind: str = "license") -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(key, by, phrase) for a license text (kind='license') or a use policy (kind='use_policy')."""
    kb = kb_mod.load()
    digest = hashlib.sha256(data).hexdigest()
    hashes = kb.text_hashes if kind == "license" else kb.policy_hashes
    if digest in hashes:
        return hashes[digest], "sha256", None
    text = normalize(data.decode("utf-8", errors="replace"))
    field_name = "text_markers" if kind == "license" else "use_policy_markers"
    best: tuple[int, str, str] | None = None
    for key, rec in kb.records.items():
        for marker in rec.get(field_name) or []:
            m = normalize(marker)
            if m in text and (best is None or len(m) > best[0]):
                best = (len(m), key, marker)
    return (best[1], "phrase", best[2]) if best else (None, None, None)


def front_matter(readme: str) -> dict:
    """The YAML front matter of a model card ({} when there is none or it does not parse)."""
    import yaml

    if not readme.startswith("---"):
        return {}
    end = re.search(r"^---\s*$", readme[3:], re.M)
    if not end:
        return {}
    try:
        data = yaml.safe_load(readme[3:3 + end.start()])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def is_multimodal(model_dir: Path) -> Optional[bool]:
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    archs = " ".join(cfg.get("architectures") or [])
    return bool("vision_config" in cfg or _MULTIMODAL_ARCH.search(archs) or cfg.get("model_type") == "mllama")


def _info(p: Path, kind: Optional[str]) -> FileInfo:
    data = p.read_bytes()
    info = FileInfo(p.name, hashlib.sha256(data).hexdigest(), len(data))
    if kind:
        info.recognised_as, info.by, info.phrase = recognise(data, kind)
    return info


def detect(model_dir: Path) -> Detected:
    """What the snapshot in `model_dir` says about its license."""
    model_dir = Path(model_dir)
    out = Detected(multimodal=is_multimodal(model_dir))
    files = sorted(p for p in model_dir.iterdir() if p.is_file()) if model_dir.is_dir() else []
    for p in files:
        up = p.name.upper()
        if up.startswith(_LICENSE_PREFIXES):
            out.license_files.append(_info(p, "license"))
        elif up.startswith(_POLICY_PREFIXES):
            out.use_policy_files.append(_info(p, "use_policy"))
        elif up.startswith(_NOTICE_PREFIXES):
            out.notice_files.append(_info(p, None))
    readme = model_dir / "README.md"
    if readme.is_file():
        fm = front_matter(readme.read_text(encoding="utf-8", errors="replace"))
        lic = fm.get("license")
        if lic:
            out.readme = {k: fm.get(k) for k in ("license", "license_name", "license_link")}
            # a list of ids in the tag means all of them apply
            text = " AND ".join(map(str, lic)) if isinstance(lic, list) else str(lic)
            try:
                out.tag = ids.resolve(text, key="README.md license", name=fm.get("license_name"),
                                      link=fm.get("license_link"), allow_unknown=True)
            except InvalidInput:  # a malformed tag is a witness we cannot read, not a bad recipe
                out.tag = ids.Resolved(text, [(ids.UNKNOWN_PREFIX + text,)], "unknown")
    return out
