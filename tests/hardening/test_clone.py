"""A clone speaks for itself: no tracked file points at the machine it was written on, or at notes
outside the repository, and the facts moved into docs/ keep their sources."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.helpers import REPO

# spelled in pieces so that this file does not match itself
MACHINE_PATHS = re.compile("|".join(re.escape(p) for p in ("/" + "work/", "/" + "root/", "/" + "tmp/",
                                                             ".." + "/shared", "shared" + "/reference")))


def tracked_files() -> list[str]:
    if not shutil.which("git") or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if f]


def test_no_tracked_file_names_a_machine_path():
    hits = []
    for name in tracked_files():
        p = REPO / name
        if not p.is_file():
            continue
        data = p.read_bytes()
        if b"\0" in data[:4096]:
            continue  # binary
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if MACHINE_PATHS.search(line):
                hits.append(f"{name}:{n}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)


def test_docs_the_readme_points_at_exist():
    readme = (REPO / "README.md").read_text()
    for doc in re.findall(r"`(docs/[\w.-]+\.md)`", readme):
        assert (REPO / doc).is_file(), doc
    for doc in ("docs/design.md", "docs/anchors.md", "docs/licenses.md"):
        assert (REPO / doc).is_file(), doc


def test_every_license_record_names_its_public_source():
    records = yaml.safe_load((REPO / "llmbuild" / "licenses" / "data" / "licenses.yaml").read_text())["licenses"]
    for rec in records:
        assert str(rec.get("url", "")).startswith("https://"), rec["key"]
        assert rec.get("source") or rec.get("inherits"), rec["key"]
