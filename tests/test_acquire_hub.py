"""The hub source against a Hub cache laid out the way huggingface_hub lays it out, offline."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from llmbuild.errors import InvalidInput
from llmbuild.hashing import StatCache
from tests.conftest import make_tiny
from tests.helpers import latest, manifest, run_cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hub_cache(hf_home: Path, repo_id: str, src: Path, commit: str = COMMIT, refs=("main",),
                      extra_files: dict | None = None) -> Path:
    """HF_HOME/hub/models--org--name/{blobs,refs,snapshots/<commit>} with snapshot files linking to blobs."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    files = {p.name: p.read_bytes() for p in src.iterdir() if p.is_file()}
    files.update(extra_files or {})
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / name)
    for r in refs:
        (repo / "refs" / r).write_text(commit)
    return snap


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    hf_home = tmp_path / "hf"
    src = make_tiny(tmp_path / "src")
    readme = b"---\nlicense: apache-2.0\n---\n# tiny\n"
    snap = lay_out_hub_cache(hf_home, "acme/tiny-llama", src, refs=("main", "v1.0"),
                             extra_files={"README.md": readme, "pytorch_model.bin": b"pickle that must be skipped"})
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return hf_home, snap


def test_offline_snapshot_resolves_commit_and_prefers_safetensors(hub, tmp_path):
    from llmbuild.stages.acquire import acquire_hub

    _, snap = hub
    rec = acquire_hub("acme/tiny-llama", "v1.0", allow_pickle=False, stat_cache=StatCache(None))
    assert rec["commit"] == COMMIT
    assert Path(rec["model_dir"]) == snap
    assert "model.safetensors" in rec["files"] and "pytorch_model.bin" not in rec["files"]
    assert rec["weights_format"] == "safetensors"
    assert rec["files"]["README.md"]["sha256"] == hashlib.sha256(b"---\nlicense: apache-2.0\n---\n# tiny\n").hexdigest()


def test_offline_missing_revision_is_input_error(hub):
    from llmbuild.stages.acquire import acquire_hub

    with pytest.raises(InvalidInput, match="model.revision.*v2.0.*offline"):
        acquire_hub("acme/tiny-llama", "v2.0", allow_pickle=False, stat_cache=StatCache(None))


def test_offline_missing_repo_is_input_error(hub):
    from llmbuild.stages.acquire import acquire_hub

    with pytest.raises(InvalidInput, match="acme/other"):
        acquire_hub("acme/other", "main", allow_pickle=False, stat_cache=StatCache(None))


def test_hub_build_honours_hf_home(tmp_path):
    """The whole build from a Hub cache, HF_HOME and HF_HUB_OFFLINE set as a user would."""
    hf_home = tmp_path / "hf"
    lay_out_hub_cache(hf_home, "acme/tiny-llama", make_tiny(tmp_path / "src"),
                      extra_files={"README.md": b"---\nlicense: apache-2.0\n---\n# tiny\n"})
    cwd = tmp_path / "work"
    cwd.mkdir()
    proc = run_cli(["recipe=tiny", "model.source=hub", "model.repo_id=acme/tiny-llama", "~targets.onnx32",
                    "license.id=null", "build.model_name=tiny-llama-gguf"], cwd, env={"HF_HOME": str(hf_home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(latest(cwd))
    assert m["inputs"]["commit"] == COMMIT and m["inputs"]["repo_id"] == "acme/tiny-llama"
    card = (latest(cwd) / "README.md").read_text()
    assert "base_model: acme/tiny-llama" in card and "license: apache-2.0" in card  # read from the snapshot card
    shutil.rmtree(hf_home)
