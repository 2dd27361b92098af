"""Acquire: get the source checkpoint and the digest of every input file.

- hub: `huggingface_hub.snapshot_download` at `model.revision`, resolved to the commit sha that is
  recorded. Safetensors are preferred: `.bin` files are fetched only when the snapshot has no
  safetensors and `model.allow_pickle` is true. HF_HUB_OFFLINE and HF_HOME are honoured by
  huggingface_hub itself; offline, a revision missing from the cache is an input error.
- local: a checkpoint folder, checked (config.json, architecture, safetensors headers) and hashed.
- init: a new checkpoint from an architecture config and a seed (llmbuild/synth.py), cached by
  its recipe subtree like any stage.
Hub and local files are hashed through the stat cache, so a rebuild does not re-read the weights.
Every checkpoint is checked before a stage reads it (llmbuild/checkpoint.py): names leading out of the
folder, code it would need to run, tokenizer files, vocabulary against the embedding, NaN/Inf weights.
The NaN/Inf scan reads every weight once; its verdict is remembered by the weight files' digests
(`finite.json` beside the stat cache), so a rebuild does not read them again.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llmbuild.checkpoint import (
    TOKENIZER_FILES,
    Checkpoint,
    check_chat_template,
    check_remote_code,
    check_vocabulary,
    nonfinite,
    open_checkpoint,
)
from llmbuild.errors import InvalidInput
from llmbuild.hashing import StatCache, sha256_json, tree_digest

INIT_TOOLS = ("torch", "transformers", "sentencepiece", "tokenizers", "safetensors")
LOCAL_TOOLS = ("safetensors",)  # what reads a checkpoint's headers (no cache entry: the key is informational)
HUB_TOOLS = ("huggingface-hub", "safetensors")
# what a hub snapshot needs; weights are asked for separately so .bin is skipped when safetensors exist
_HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.jinja", "*.txt", "*.md",
              "LICENSE*", "NOTICE*", "USE_POLICY*"]
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".jinja", ".tiktoken")


@dataclass
class ModelRef:
    """The checkpoint every later stage reads, and the digest that keys them."""

    dir: Path
    digest: str
    files: dict  # relative path -> {"sha256", "size"}
    record: dict


def model_files(model_dir: Path, weight_files: list[Path]) -> list[Path]:
    """The files that define the model: config, weights, tokenizer; plus license/readme texts."""
    names = {p.name for p in weight_files}
    out = list(weight_files)
    for p in sorted(model_dir.iterdir()):
        if p.is_file() and p.name not in names and (
            (p.suffix in _MODEL_FILE_SUFFIXES and p.suffix != ".bin") or p.name in TOKENIZER_FILES
            or p.name.upper().startswith(("LICENSE", "NOTICE", "USE_POLICY", "README"))
        ):
            out.append(p)
    return out


def check_finite(ckpt: Checkpoint, files: dict, stat_cache: StatCache) -> None:
    """Exit 2 naming the first tensor that holds NaN or Inf; a verdict once reached is remembered."""
    weights = sha256_json(sorted(files[p.relative_to(ckpt.dir).as_posix()]["sha256"] for p in ckpt.weight_files))
    memo_path = stat_cache.path.parent / "finite.json" if stat_cache.path else None
    memo = {}
    if memo_path and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, json.JSONDecodeError):
            memo = {}  # a damaged memo only costs a second scan
    if memo.get(weights) is True:
        return
    bad = nonfinite(ckpt)
    if bad:
        name, f, nan, inf = bad
        what = " and ".join(x for x in (f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else "") if x)
        raise InvalidInput(f"{f}: tensor {name} holds {what} values; the checkpoint is damaged (or was saved "
                           "from a diverged run) and no artifact built from it would be usable")
    if memo_path and not stat_cache.readonly:  # a dry run writes nothing beside the cache either
        memo[weights] = True
        tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(memo))
            os.replace(tmp, memo_path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a memo that cannot be written only costs a scan next time


def describe(model_dir: Path, allow_pickle: bool, stat_cache: StatCache, key: str, extra: dict,
             trust_remote_code: bool = False, warnings: list | None = None) -> dict:
    ckpt = open_checkpoint(model_dir, allow_pickle=allow_pickle, key=key)
    check_remote_code(model_dir, ckpt.config, trust_remote_code)
    check_chat_template(model_dir)
    vocab_warnings = check_vocabulary(ckpt)
    files = {p.relative_to(model_dir).as_posix(): {"sha256": stat_cache.digest(p), "size": p.stat().st_size}
             for p in model_files(model_dir, ckpt.weight_files)}
    check_finite(ckpt, files, stat_cache)
    if warnings is not None:
        warnings += vocab_warnings
    return {
        "model_dir": str(model_dir),
        "architecture": ckpt.arch.name,
        "num_parameters": ckpt.param_count(),
        "weights_format": "pytorch-pickle" if ckpt.pickle else "safetensors",
        "config": ckpt.config,
        "files": files,
        "model_digest": tree_digest(files),
        **extra,
    }


def check_local_path(path: str | None) -> Path:
    """model.path names an existing checkpoint folder (a check the recipe alone allows: before any stage)."""
    if not path:
        raise InvalidInput("model.path: required when model.source is local")
    try:
        p = Path(path).expanduser()
        exists, is_file = p.exists(), p.is_file()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, an unknown ~user
        raise InvalidInput(f"model.path: {path!r} is not a usable path") from None
    if not exists:
        raise InvalidInput(f"model.path: {p} does not exist")
    if is_file:
        raise InvalidInput(f"model.path: {p} is a file; name the checkpoint folder that holds config.json and "
                           "the weights" + (f" ({p.parent}?)" if (p.parent / "config.json").is_file() else ""))
    return p.resolve()


def acquire_local(path: str | None, allow_pickle: bool, stat_cache: StatCache, trust_remote_code: bool = False,
                  warnings: list | None = None) -> dict:
    return describe(check_local_path(path), allow_pickle, stat_cache, "model.path", {"source": "local"},
                    trust_remote_code, warnings)


# owner/name as the Hub spells it: letters, digits, '-', '_', '.'; no '--' or '..' (huggingface_hub's rule)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def check_repo_id(repo_id: str | None) -> str:
    """model.repo_id is `owner/name`; checked before anything is downloaded."""
    if not repo_id:
        raise InvalidInput("model.repo_id: required when model.source is hub")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
        ok = bool(_REPO_ID.match(repo_id)) and not repo_id.endswith((".git", "."))
    except HFValidationError:
        ok = False
    if not ok:
        raise InvalidInput(f"model.repo_id: {repo_id!r} is not a Hub repo id of the form owner/name "
                           "(e.g. Qwen/Qwen2.5-0.5B)")
    return repo_id


# an access token as huggingface_hub and the Hub print them; never echoed back to a user's log
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{8,}")


def _login_hint(repo_id: str, what: str) -> str:
    return (f"model.repo_id: {repo_id} is {what}: log in with `hf auth login` (or set HF_TOKEN) as a user "
            f"who has access" + (f", after accepting its terms at https://huggingface.co/{repo_id}"
                                 if what.startswith("gated") else ""))


def acquire_hub(repo_id: str | None, revision: str, allow_pickle: bool, stat_cache: StatCache,
                trust_remote_code: bool = False, warnings: list | None = None, local_only: bool = False) -> dict:
    """The snapshot, checked and hashed. local_only (a dry run): from the Hub cache or not at all; a
    snapshot that is not there raises NotInDryRun saying what the build would download."""
    check_repo_id(repo_id)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")

    def download(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                          local_files_only=local_only))
        except (LocalEntryNotFoundError, FileNotFoundError):
            if local_only:
                from llmbuild.declaration import NotInDryRun

                raise NotInDryRun(f"{repo_id}@{revision} from the Hub" + (
                    " (HF_HUB_OFFLINE is set, so the build stops unless the Hub cache has it by then)"
                    if offline else "")) from None
            where = os.environ.get("HF_HOME", "~/.cache/huggingface")
            raise InvalidInput(
                f"model.revision: {repo_id}@{revision} is not in the offline Hub cache (HF_HOME={where})"
                if offline else f"model.repo_id: cannot download {repo_id}@{revision} (no network?)"
            ) from None
        except GatedRepoError:  # before RepositoryNotFoundError: it is one
            raise InvalidInput(_login_hint(repo_id, "gated (401/403)")) from None
        except RevisionNotFoundError:
            raise InvalidInput(f"model.revision: {revision!r} does not exist in {repo_id}") from None
        except RepositoryNotFoundError:
            # the Hub answers 401 for a private repo and for one that does not exist alike
            raise InvalidInput(_login_hint(repo_id, "not found, or private (401)")) from None
        except HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status in (401, 403):
                raise InvalidInput(_login_hint(repo_id, f"not accessible with your credentials ({status})")) from None
            raise InvalidInput(f"model.repo_id: {repo_id}: {_TOKEN.sub('hf_***', str(e).splitlines()[0])}") from None

    snap = download(_HUB_FILES)
    if not any(snap.glob("*.safetensors")) and allow_pickle:
        snap = download([*_HUB_FILES, "*.bin"])
    commit = snap.name  # snapshots/<commit sha>
    return describe(snap, allow_pickle, stat_cache, "model.repo_id",
                    {"source": "hub", "repo_id": repo_id, "revision": revision, "commit": commit},
                    trust_remote_code, warnings)


def init_key_config(model_cfg, digest) -> dict:
    """The recipe subtree that determines an init model, with the tokenizer inputs by content
    (`digest(path)`: a sha256, or the planner's File placeholder that the engine hashes)."""
    tok = model_cfg.tokenizer
    tok_inputs = {}
    try:
        if tok.path:
            d = Path(tok.path)
            if not d.is_dir():
                raise InvalidInput(f"model.tokenizer.path: {d} is not a folder")
            tok_inputs = {p.name: digest(p) for p in sorted(d.iterdir()) if p.is_file()}
        elif tok.train_text:
            p = Path(tok.train_text)
            if not p.is_file():
                raise InvalidInput(f"model.tokenizer.train_text: {p} not found")
            tok_inputs = {"train_text": digest(p), "vocab_size": tok.vocab_size}
        else:
            raise InvalidInput("model.tokenizer: an init model needs tokenizer.path or tokenizer.train_text")
    except (OSError, ValueError) as e:  # a name the OS cannot hold, a folder it may not list
        raise InvalidInput(f"model.tokenizer: {tok.path or tok.train_text!r}: {e}") from None
    return {"architecture": model_cfg.architecture, "config": dict(model_cfg.config), "seed": model_cfg.seed,
            "tokenizer": tok_inputs}


def run_init(model_cfg, out: Path, stat_cache: StatCache) -> dict:
    from llmbuild.synth import create_model

    tok = model_cfg.tokenizer
    dtype = "float32" if model_cfg.dtype.value == "auto" else model_cfg.dtype.value
    model_dir = create_model(out / "model", model_cfg.architecture, dict(model_cfg.config), model_cfg.seed,
                             tokenizer_dir=Path(tok.path) if tok.path else None,
                             train_text=Path(tok.train_text) if tok.train_text else None,
                             vocab_size=tok.vocab_size, dtype=dtype)
    rec = describe(model_dir, False, stat_cache, "model", {"source": "init", "seed": model_cfg.seed})
    rec["model_dir"] = "model"  # relative to the cache entry: entries can move with the cache
    return rec
