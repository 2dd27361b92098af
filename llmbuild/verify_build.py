"""`llmbuild-verify`: check that a build folder is what its manifest says, and optionally that its
artifacts still compute what they computed.

    llmbuild-verify BUILD [--rerun] [--json]

Without --rerun: every artifact file named in manifest.json is hashed again (sha256 and size), and the
inputs' files too where the model folder the build read is still on this machine. With --rerun: each
verified artifact is run again by its runtime on the build's probe prompts against the source's
reference logits (from the stage cache, by the key the manifest records, or computed again from the
model folder) and held to the gates recorded for it; its figures must also repeat the recorded ones.
Exit codes: 0 everything matches, 4 any mismatch (the first is named; --json lists all), 2 a folder
that is not a build or a rerun whose reference cannot be had.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from llmbuild.errors import BuildError, GateFailed, InvalidInput

PROG = "llmbuild-verify"
# a rerun's figures repeat the recorded ones within this (runtimes are deterministic on one machine; the
# slack covers another thread count's summation order)
RERUN_TOLERANCE = {"top1": 0.02, "kld_mean": 1e-4, "max_abs_diff": 0.05}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise InvalidInput(message)


def check_files(build: Path, manifest: dict) -> tuple[list[dict], int]:
    """Mismatches of the artifacts' files (and of the inputs' files where they are still here)."""
    from llmbuild.hashing import sha256_file

    problems, checked = [], 0
    entries = [(build / f["path"], f, f["path"]) for a in manifest.get("artifacts") or [] for f in a.get("files") or []]
    inputs = manifest.get("inputs") or {}
    model_dir = Path(inputs["model_dir"]) if inputs.get("model_dir") else None
    if model_dir is not None and model_dir.is_dir():
        entries += [(model_dir / p, f, f"inputs/{p}") for p, f in (inputs.get("files") or {}).items()]
    for path, f, name in entries:
        checked += 1
        if not path.is_file():
            problems.append({"file": name, "problem": "missing"})
            continue
        size = path.stat().st_size
        if size != f.get("size"):
            problems.append({"file": name, "problem": f"size {size}, manifest {f.get('size')}"})
            continue
        digest = sha256_file(path)
        if digest != f.get("sha256"):
            problems.append({"file": name, "problem": f"sha256 {digest[:12]}…, manifest {str(f.get('sha256'))[:12]}…"})
    return problems, checked


def _reference(manifest: dict, build: Path, tmp: Path) -> Path:
    """reference.npz: from the cache entry the manifest's reference stage names, else computed again."""
    from llmbuild.cache import Cache

    cfg = manifest.get("config") or {}
    b = cfg.get("build") or {}
    stage = next((s for s in manifest.get("stages") or [] if s.get("stage") == "reference"), None)
    roots = [Path(b["cache_dir"])] if b.get("cache_dir") else []
    roots += [Path(b.get("outputs_dir") or "outputs") / ".cache", build.resolve().parents[1] / ".cache"]
    if stage and stage.get("key"):
        for root in roots:
            hit = Cache(root).lookup("reference", stage["key"]) if root.is_dir() else None
            if hit and (hit.out / "reference.npz").is_file():
                return hit.out / "reference.npz"
    model_dir = Path((manifest.get("inputs") or {}).get("model_dir") or "")
    if not (model_dir / "config.json").is_file():
        raise InvalidInput(f"{build}: --rerun needs the source's reference logits; the stage cache has no entry "
                           f"{str((stage or {}).get('key'))[:12]} and the model folder {model_dir} is gone")
    from llmbuild.stages import reference

    e, m = cfg.get("eval") or {}, cfg.get("model") or {}
    reference.run(model_dir, list(e.get("probes") or []), int(e.get("max_tokens", 64)), m.get("dtype", "auto"),
                  bool(m.get("trust_remote_code")), tmp)
    return tmp / "reference.npz"


def rerun(build: Path, manifest: dict) -> list[dict]:
    """Each verified artifact through its runtime again: recorded gates and recorded figures."""
    from llmbuild import targets as registry
    from llmbuild.stages import verify

    arts = [a for a in manifest.get("artifacts") or [] if (a.get("verification") or {}).get("status") in ("passed",
                                                                                                         "failed")]
    problems = []
    if not arts:
        return problems
    kv = bool(((manifest.get("config") or {}).get("eval") or {}).get("kv_check", True))
    with tempfile.TemporaryDirectory() as tmp:
        ref = _reference(manifest, build, Path(tmp))
        for a in arts:
            b = registry.backend(a["backend"])
            if not b.runtime_available():
                problems.append({"artifact": a["target"], "problem": f"{b.runtime.dist} is not installed here"})
                continue
            rec = verify.run(b, build / "artifacts" / a["target"], a.get("export") or {}, ref, kv)
            for g in verify.apply_gates(rec, a.get("gates") or {}):
                if not g["passed"]:
                    problems.append({"artifact": a["target"], "problem": f"gate {g['gate']}: {g['figure']} = "
                                                                         f"{g['value']:.4g}, limit {g['limit']}"})
            was = (a.get("verification") or {}).get("metrics") or {}
            for k, tol in RERUN_TOLERANCE.items():
                if k in was and abs(rec["metrics"][k] - was[k]) > tol:
                    problems.append({"artifact": a["target"], "problem": f"{k} {rec['metrics'][k]:.4g} now, "
                                                                         f"{was[k]:.4g} recorded"})
    return problems


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _Parser(prog=PROG, description="Re-hash a build's files against its manifest; --rerun repeats the checks.")
    p.add_argument("build", type=Path)
    p.add_argument("--rerun", action="store_true", help="run every verified artifact through its runtime again")
    p.add_argument("--json", action="store_true", help="print every finding as JSON")
    try:
        a = p.parse_args(argv)
        path = a.build / "manifest.json"
        if not path.is_file():
            raise InvalidInput(f"{a.build}: not a build folder (no manifest.json)")
        manifest = json.loads(path.read_text())
        problems, checked = check_files(a.build, manifest)
        reran = rerun(a.build, manifest) if a.rerun else []
        if a.json:
            print(json.dumps({"files_checked": checked, "files": problems, "rerun": reran}, indent=2))
        if problems or reran:
            first = problems[0] if problems else reran[0]
            what = f"{first.get('file') or first.get('artifact')}: {first['problem']}"
            raise GateFailed(f"{what} ({len(problems)} file mismatch(es) of {checked}, {len(reran)} rerun mismatch(es))")
        print(f"{a.build}: {checked} files match the manifest" + (
            f"; {sum(1 for x in manifest.get('artifacts') or [] if x.get('verification'))} artifacts re-verified"
            if a.rerun else ""))
        code = 0
    except BuildError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        code = e.exit_code
    except Exception as e:
        from llmbuild.ui import bug_message

        print(f"{PROG}: error: {bug_message(e)}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
