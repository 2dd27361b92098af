"""`llmbuild-license check`: the same verdict as a build, exit 0 / 3 / 2, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmbuild.licenses.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("args,code,first_line", [
    (["check", "llama3.1", "--policy", "commercial-saas", "--mau", "800000000"], 3, "verdict: fail"),
    (["check", "llama3.1", "--policy", "commercial-saas", "--mau", "5000000"], 0, "verdict: pass with obligations"),
    (["check", "apache-2.0", "--policy", "commercial"], 0, "verdict: pass"),
    (["check", "Apache-2.0 OR MIT", "--policy", "commercial-onprem"], 0, "verdict: pass with obligations"),
    (["check", "cc-by-nc-4.0", "--policy", "commercial-saas"], 3, "verdict: fail"),
    (["check", "cc-by-nc-4.0", "--policy", "research"], 0, "verdict: pass with obligations"),
    (["check", "mit", "--policy", "commercial-saas", "--dataset-license", "CC-BY-NC-4.0"], 3, "verdict: fail"),
    (["check", "llama3.2", "--policy", "commercial", "--region", "EU", "--multimodal"], 3, "verdict: fail"),
    (["check", "LicenseRef-scancode-llama-2-license-2023", "--policy", "commercial", "--mau", "800000000",
      "--waive", "llama2:monthly_active_users", "separate license from Meta", "legal"], 0,
     "verdict: pass with obligations"),
])
def test_check_verdicts_and_exit_codes(args, code, first_line):
    p = run(*args)
    assert p.returncode == code, p.stderr
    assert p.stdout.splitlines()[0] == first_line


def test_check_prints_the_reason_a_build_would():
    p = run("check", "llama3.1", "--policy", "commercial-saas", "--mau", "800000000")
    assert "llama3.1:monthly_active_users: 800,000,000 monthly active users is above the license's 700,000,000" \
        in p.stdout
    assert "monthly_active_users=800,000,000 (license.facts.monthly_active_users)" in p.stdout
    p = run("check", "llama3.1", "--policy", "commercial", "--model-name", "acme-chat")
    assert "set build.model_name to 'Llama-acme-chat'" in p.stdout and p.returncode == 3


def test_json_output_is_the_report_schema():
    p = run("check", "gemma", "--policy", "commercial-onprem", "--json")
    data = json.loads(p.stdout)
    assert data["schema_version"] == 1 and data["verdict"] == "pass with obligations"
    assert data["license"]["hub_id"] == "gemma"


@pytest.mark.parametrize("args,message", [
    (["check", "lama-3.1", "--policy", "commercial"], "LICENSE_ID: unknown license 'lama-3.1'; closest known ids: "),
    (["check", "Apache-2.0 AND", "--policy", "commercial"], "LICENSE_ID: malformed license expression"),
    (["check", "(MIT OR", "--policy", "commercial"], "LICENSE_ID: malformed license expression"),
    (["check", "mit", "--policy", "enterprise"],
     "--policy: no policy 'enterprise'; known policies: commercial, commercial-onprem, commercial-saas, "
     "internal-eval, research"),
    (["check", "llama3.1", "--policy", "commercial", "--waive", "llama3.1:naming", "", "legal"],
     "--waive[0].reason: a waiver needs a reason and who approved it"),
    (["check", "mit", "--policy", "commercial", "--dataset-license", "my-data-license"],
     "--dataset-license[0].license: unknown license 'my-data-license'"),
    (["check", "mit", "--policy", "commercial", "--mau", "lots"], "argument --mau: invalid int value: 'lots'"),
    (["check", "mit"], "the following arguments are required: --policy"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    p = run(*args)
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmbuild-license: error: "), p.stderr
    assert message in lines[0]


def test_user_policy_from_a_recipe_folder(tmp_path):
    pol = tmp_path / "license" / "policy"
    pol.mkdir(parents=True)
    (pol / "no-caps.yaml").write_text("defaults: [commercial-saas, _self_]\nname: no-caps\n"
                                      "allow_mau_thresholds: false\n")
    (pol / "typo.yaml").write_text("name: typo\nallow_mau_treshold: false\n")
    p = run("check", "llama3.1", "--policy", "no-caps", "--config-dir", str(tmp_path), "--mau", "5")
    assert p.returncode == 3 and "allow_mau_thresholds: false" in p.stdout
    assert run("check", "mit", "--policy", "no-caps", "--config-dir", str(tmp_path)).returncode == 0
    p = run("check", "mit", "--policy", str(pol / "typo.yaml"))
    assert p.returncode == 2 and "allow_mau_treshold" in p.stderr and len(p.stderr.splitlines()) == 1


def test_list_names_every_license():
    p = run("list")
    assert p.returncode == 0 and len(p.stdout.splitlines()) >= 24 and "tongyi-qianwen" in p.stdout
