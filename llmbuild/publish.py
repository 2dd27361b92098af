"""`llmbuild-publish`: upload a build's folder, or one artifact's, to a Hugging Face Hub model repository.

    llmbuild-publish BUILD --repo OWNER/NAME [--artifact TARGET] [--private] [--revision BRANCH]
                     [--message TEXT] [--dry-run]

Publishing is redistribution, whatever the build's own deployment facts said, so the license is
decided again with `distribution: redistributed` (the same evaluation as the build, llmbuild/licenses)
and a verdict of fail stops here with exit 3, naming the clause, before anything is sent. Otherwise
the repository is created if missing (huggingface_hub `create_repo(exist_ok=True)`) and the folder
sent in one commit with `upload_folder`. `--artifact hf` (the hf target's folder: weights, config,
tokenizer, README.md card, license files) is the usual upload; without it the whole build folder goes
(its card, reports, manifest, BOM and every artifact), less build.log. The token and endpoint are
huggingface_hub's (`HF_TOKEN` or `hf auth login`, `HF_ENDPOINT`); a token is never printed.
Exit codes: 0 uploaded (or dry run), 2 bad input, 3 the license forbids redistribution, 1 a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmbuild.errors import BuildError, InvalidInput, LicenseViolation

PROG = "llmbuild-publish"
IGNORE = ["build.log", "*.tmp", ".*"]  # the log holds this machine's paths and timings, not the model


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise InvalidInput(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Upload a build (or one artifact) to the Hugging Face Hub.")
    p.add_argument("build", type=Path, help="a build folder (outputs/RECIPE/BUILD-ID or outputs/RECIPE/latest)")
    p.add_argument("--repo", required=True, help="the Hub model repository, owner/name")
    p.add_argument("--artifact", help="upload only artifacts/TARGET (e.g. the hf target's folder)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="the branch to commit to (default: main)")
    p.add_argument("--message", default=None, help="the commit message")
    p.add_argument("--dry-run", action="store_true", help="check and list what would be uploaded; send nothing")
    return p


def load_manifest(build: Path) -> dict:
    path = Path(build) / "manifest.json"
    if not path.is_file():
        raise InvalidInput(f"{build}: not a build folder (no manifest.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}: not valid JSON ({e})") from None


def redistribution_decision(manifest: dict):
    """The build's license decided again as a redistribution (the build's recipe, policy and facts
    otherwise unchanged)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from llmbuild import licenses
    from llmbuild.licenses.config import DatasetLicense, LicenseConfig

    cfg = manifest.get("config") or {}
    try:
        lic = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LicenseConfig), cfg.get("license") or {}))
    except OmegaConfBaseException as e:
        raise InvalidInput(f"manifest.json config.license: {str(e).splitlines()[0]}") from None
    lic.facts.distribution = "redistributed"
    ft = cfg.get("finetune") or {}
    if ft.get("method", "none") != "none":
        lic.training_data = [*lic.training_data, *(DatasetLicense(name=d["path"], license=d["license"])
                                                   for d in ft.get("datasets") or [])]
    model = cfg.get("model") or {}
    source = model.get("source", "init")
    facts = licenses.BuildFacts(
        model_name=manifest.get("model_name"),
        base_model=model.get("repo_id") if source == "hub" else (
            Path(model["path"]).name if source == "local" and model.get("path") else None),
        source=source, finetune=ft.get("method", "none"),
        targets={a["target"]: {"backend": a["backend"], "precision": a.get("precision"),
                               "quantized": bool(a.get("quantized"))} for a in manifest.get("artifacts") or []})
    inputs = manifest.get("base_model_inputs") or manifest.get("inputs") or {}
    upstream = Path(inputs["model_dir"]) if source != "init" and inputs.get("model_dir") else None
    if upstream is not None and not upstream.is_dir():
        upstream = None  # the snapshot is gone: the recorded license id decides
    return licenses.evaluate(lic, upstream, facts)


def check_license(manifest: dict) -> object:
    decision = redistribution_decision(manifest)
    if decision.verdict == "fail":
        failed = [c for c in decision.clauses if c.get("verdict") == "fail"]
        why = failed[0]["reason"] if failed else "the policy is not met"
        raise LicenseViolation(f"license: publishing redistributes the model, and {why} "
                               f"({failed[0]['id'] if failed else 'license'}; see LICENSE_REPORT.md)")
    return decision


def folder_to_upload(build: Path, manifest: dict, artifact: str | None) -> Path:
    if artifact is None:
        return Path(build)
    names = [a["target"] for a in manifest.get("artifacts") or []]
    if artifact not in names:
        raise InvalidInput(f"--artifact: {artifact!r} is not an artifact of this build (it has: {', '.join(names)})")
    folder = Path(build) / "artifacts" / artifact
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: the artifact's folder is missing")
    return folder


def publish(build: Path, repo: str, artifact: str | None = None, private: bool = False, revision: str | None = None,
            message: str | None = None, dry_run: bool = False) -> dict:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
        if "/" not in repo:
            raise HFValidationError("no owner")
    except HFValidationError:
        raise InvalidInput(f"--repo: {repo!r} is not a Hub repository id (owner/name)") from None
    manifest = load_manifest(build)
    if manifest.get("status") != "built":
        raise InvalidInput(f"{build}: the build's status is {manifest.get('status')!r}; only a built build is published")
    decision = check_license(manifest)
    folder = folder_to_upload(build, manifest, artifact)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                   and not any(p.match(g) for g in IGNORE) and not p.name.startswith("."))
    out = {"repo": repo, "folder": str(folder), "files": files, "verdict": decision.verdict}
    if dry_run:
        return out
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model", revision=revision,
                                 commit_message=message or f"llmbuild {manifest.get('build_id')}"
                                 + (f": {artifact}" if artifact else ""),
                                 ignore_patterns=IGNORE)
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise InvalidInput(f"--repo {repo}: the Hub refused the upload ({status}); log in with `hf auth login` "
                               "or set HF_TOKEN to a token that may write to it") from None
        raise InvalidInput(f"--repo {repo}: the Hub answered {status}: {str(e).splitlines()[0]}") from None
    out["commit"] = getattr(info, "oid", None)
    out["url"] = str(getattr(info, "commit_url", "") or "")
    return out


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        a = _parser().parse_args(argv)
        out = publish(a.build, a.repo, a.artifact, a.private, a.revision, a.message, a.dry_run)
        what = "would upload" if a.dry_run else "uploaded"
        print(f"{what} {len(out['files'])} files from {out['folder']} to {out['repo']} "
              f"(license {out['verdict']} as a redistribution){': ' + out['url'] if out.get('url') else ''}")
        code = 0
    except BuildError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        code = e.exit_code
    except Exception as e:  # a bug: one line
        from llmbuild.ui import bug_message

        print(f"{PROG}: error: {bug_message(e)}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
