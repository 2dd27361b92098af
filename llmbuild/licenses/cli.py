"""`llmbuild-license`: answer a license question without building.

    llmbuild-license check LICENSE_ID --policy NAME [--mau N] [--hosted | --redistributed | --internal]
        [--company | --individual | --research-institution] [--region EU ...] [--multimodal | --text-only]
        [--model-api] [--dataset-license ID ...] [--outputs-of ID ...] [--model-name NAME]
        [--license-name NAME --license-link URL] [--unknown-allow] [--waive CLAUSE REASON APPROVED_BY]
        [--config-dir DIR] [--json]
    llmbuild-license list

`check` runs the same evaluation as a build (llmbuild/licenses/policy.py) and prints the same verdict
and reasons. The policy is conf/license/policy/NAME.yaml, or DIR/license/policy/NAME.yaml with
--config-dir DIR (a recipe folder), or a path to a YAML file. Exit codes: 0 pass or pass with
obligations, 3 fail, 2 bad input; errors are one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llmbuild.errors import BuildError, InvalidInput

SHIPPED_POLICIES = Path(__file__).resolve().parents[2] / "conf" / "license" / "policy"
PROG = "llmbuild-license"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + error over two lines; we promise one
        raise InvalidInput(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Check a license question without building (see the module docstring).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="verdict of a license under a policy and deployment facts")
    c.add_argument("license_id", metavar="LICENSE_ID", help="Hub id, SPDX id or expression, or alias")
    c.add_argument("--policy", required=True, help="policy name (conf/license/policy/NAME.yaml) or YAML path")
    c.add_argument("--config-dir", action="append", default=[], help="a recipe folder holding license/policy/NAME.yaml")
    c.add_argument("--mau", type=int, help="monthly active users of your and your affiliates' products")
    dist = c.add_mutually_exclusive_group()
    for d in ("hosted", "redistributed", "internal"):
        dist.add_argument(f"--{d}", dest="distribution", action="store_const", const=d)
    who = c.add_mutually_exclusive_group()
    for d in ("company", "individual", "research_institution"):
        who.add_argument(f"--{d.replace('_', '-')}", dest="deployer", action="store_const", const=d)
    c.add_argument("--region", action="append", default=[], help="where the deployer is domiciled (EU, DE, ...)")
    mm = c.add_mutually_exclusive_group()
    mm.add_argument("--multimodal", dest="multimodal", action="store_const", const=True)
    mm.add_argument("--text-only", dest="multimodal", action="store_const", const=False)
    c.add_argument("--model-api", action="store_true", help="third parties call the model as an inference API")
    c.add_argument("--dataset-license", action="append", default=[], metavar="ID", help="a training dataset's license")
    c.add_argument("--outputs-of", action="append", default=[], metavar="ID",
                   help="license of a model whose outputs trained this one")
    c.add_argument("--model-name", help="name the model would ship under (checks naming rules)")
    c.add_argument("--license-name", help="license_name, for LICENSE_ID 'other'")
    c.add_argument("--license-link", help="license_link, for LICENSE_ID 'other'")
    c.add_argument("--unknown-allow", action="store_true", help="allow an unknown license (recorded)")
    c.add_argument("--waive", nargs=3, action="append", default=[], metavar=("CLAUSE", "REASON", "APPROVED_BY"),
                   help="what a recipe's license.waivers entry would waive")
    c.add_argument("--json", action="store_true", help="print license_report.json's body instead of text")
    sub.add_parser("list", help="the licenses llmbuild knows")
    return p


def known_policies(dirs: list[Path]) -> list[str]:
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})


def load_policy(name: str, config_dirs: list[str] = ()):
    """A PolicyConfig from a shipped name, a recipe folder's license/policy/NAME.yaml, or a YAML path."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from llmbuild.licenses.config import PolicyConfig, validate_policy

    dirs = [Path(d) / "license" / "policy" for d in config_dirs] + [SHIPPED_POLICIES]
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise InvalidInput(f"--policy: no such file {name}")
        dirs.insert(0, path.parent)
    else:
        path = next((d / f"{name}.yaml" for d in dirs if (d / f"{name}.yaml").is_file()), None)
        if path is None:
            raise InvalidInput(f"--policy: no policy '{name}'; known policies: {', '.join(known_policies(dirs))}")
    try:
        node = _compose(path, dirs, ())
        merged = OmegaConf.merge(OmegaConf.structured(PolicyConfig), node)
        policy = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise InvalidInput(f"policy {path}: {str(e).splitlines()[0]}") from None
    validate_policy(policy, f"policy {path.stem}")
    return policy


def _compose(path: Path, dirs: list[Path], seen: tuple):
    """The policy file with its `defaults` list applied, as Hydra composes a config group option."""
    from omegaconf import OmegaConf

    if path in seen:
        raise InvalidInput(f"policy {path}: defaults cycle")
    node = OmegaConf.load(path)
    defaults = list(node.pop("defaults", []) or [])
    if "_self_" not in defaults:
        defaults.append("_self_")
    parts = []
    for entry in defaults:
        if entry == "_self_":
            parts.append(node)
            continue
        base = next((d / f"{entry}.yaml" for d in [path.parent, *dirs] if (d / f"{entry}.yaml").is_file()), None)
        if base is None:
            raise InvalidInput(f"policy {path}: defaults entry '{entry}' is not a policy")
        parts.append(_compose(base, dirs, (*seen, path)))
    return OmegaConf.merge(*parts)


def _check(a) -> int:
    from llmbuild.licenses import policy as policy_mod
    from llmbuild.licenses import report
    from llmbuild.licenses.config import DatasetLicense, DeploymentFacts, LicenseConfig, Waiver

    if a.mau is not None and a.mau < 0:
        raise InvalidInput(f"--mau: must be >= 0, got {a.mau}")
    pol = load_policy(a.policy, a.config_dir)
    facts = DeploymentFacts(monthly_active_users=a.mau, distribution=a.distribution, deployer=a.deployer or "company",
                            regions=list(a.region), multimodal=a.multimodal, model_api=a.model_api)
    cfg = LicenseConfig(id=a.license_id, name=a.license_name, link=a.license_link,
                        unknown="allow" if a.unknown_allow else "fail", policy=pol, facts=facts,
                        training_data=[DatasetLicense(name=f"dataset-{i}", license=x)
                                       for i, x in enumerate(a.dataset_license)],
                        outputs_of=list(a.outputs_of),
                        waivers=[Waiver(clause=c, reason=r, approved_by=w) for c, r, w in a.waive])
    build = policy_mod.BuildFacts(model_name=a.model_name, base_model=None, source="check", finetune="none",
                                  targets={})
    try:
        decision = policy_mod.evaluate(cfg, None, build)
    except InvalidInput as e:
        # the same checks as a build, but the user typed arguments, not recipe keys
        msg = str(e)
        for recipe_key, arg in (("license.unknown: allow", "--unknown-allow"), ("license.id", "LICENSE_ID"),
                                ("license.waivers", "--waive"),
                                ("license.training_data", "--dataset-license"), ("license.outputs_of", "--outputs-of")):
            msg = msg.replace(recipe_key, arg)
        raise InvalidInput(msg) from None
    if a.json:
        print(json.dumps(report.to_json(decision), indent=2, ensure_ascii=False, default=str))
    else:
        print("\n".join(report.summary_lines(decision)))
    return 3 if decision.verdict == "fail" else 0


def _list() -> int:
    from llmbuild.licenses import kb as kb_mod

    kb = kb_mod.load()
    for key, rec in kb.records.items():
        hub = rec.get("hf_license") or "-"
        if hub == "other" and rec.get("hf_license_name"):
            hub = f"other/{rec['hf_license_name']}"
        kind = " [dataset]" if rec.get("kind") == "data" else ""
        print(f"{key:28} {hub:36} {rec['name']}{kind}")
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        a = _parser().parse_args(argv)
        code = _check(a) if a.command == "check" else _list()
    except BuildError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        code = e.exit_code
    except BrokenPipeError:  # `... | head`: the reader left; not an error worth a line
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except Exception as e:  # a bug: one line, not a traceback
        from llmbuild.ui import bug_message

        print(f"{PROG}: error: {bug_message(e)}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
