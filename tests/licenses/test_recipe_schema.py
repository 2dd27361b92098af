"""The recipe side: the `license/policy` group composes into `license.policy`, users add their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbuild.errors import InvalidInput

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.stem for p in (REPO / "conf" / "license" / "policy").glob("*.yaml"))


def test_shipped_policies():
    assert SHIPPED == ["commercial", "commercial-onprem", "commercial-saas", "internal-eval", "research"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_policy_file_is_documented_and_valid(name):
    from llmbuild.licenses.cli import load_policy
    from llmbuild.licenses.config import PolicyConfig

    text = (REPO / "conf" / "license" / "policy" / f"{name}.yaml").read_text()
    assert text.startswith("# ")  # opens with what it is for
    for line in text.splitlines():
        if line and not line.startswith(("#", " ", "-", "defaults")):
            assert "#" in line, f"{name}: key without a comment: {line}"
    p = load_policy(name)
    assert p.name == name and isinstance(p, PolicyConfig)


def test_commercial_equals_commercial_saas():
    from dataclasses import asdict

    from llmbuild.licenses.cli import load_policy

    a, b = asdict(load_policy("commercial")), asdict(load_policy("commercial-saas"))
    assert {**a, "name": None} == {**b, "name": None}


def _recipe(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "r.yaml"
    p.write_text("defaults:\n  - base\n" + body)
    return p


def test_recipe_composes_a_shipped_and_a_user_policy(tmp_path):
    from llmbuild.cli import compose

    r = _recipe(tmp_path, "  - override /license/policy: research\n  - _self_\nlicense:\n  id: llama3.1\n")
    cfg = compose(r, [])
    assert cfg.license.policy.name == "research" and cfg.license.policy.purpose == "research"
    (tmp_path / "license" / "policy").mkdir(parents=True)
    (tmp_path / "license" / "policy" / "mine.yaml").write_text(
        "# ours\ndefaults: [commercial-saas, _self_]\nname: mine\nmau_unknown: error\n")
    r = _recipe(tmp_path, "  - override /license/policy: mine\n  - _self_\n")
    cfg = compose(r, [])
    assert cfg.license.policy.name == "mine" and cfg.license.policy.mau_unknown == "error"
    assert cfg.license.policy.purpose == "commercial"


def test_unknown_policy_or_key_fails_composition(tmp_path):
    from llmbuild.cli import compose

    r = _recipe(tmp_path, "  - override /license/policy: enterprise\n  - _self_\n")
    with pytest.raises(InvalidInput, match="enterprise"):
        compose(r, [])
    r = _recipe(tmp_path, "  - _self_\nlicense:\n  facts:\n    users: 5\n")
    with pytest.raises(InvalidInput, match="users"):
        compose(r, [])
