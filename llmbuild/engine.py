"""Run a build: stages in plan order, each keyed by content and reused from the cache when it can be.

A stage's key is the sha256 of a sorted JSON of its name and version, its recipe subtree, the digests
of its inputs and the versions of the tools it runs (design.md, "Key"). Results live in the cache
(llmbuild/cache.py); the build folder gets hard links to them plus the documents written from what
the stages recorded. A build folder is never reused: every build gets a new id, and
outputs/<recipe>/latest moves only when a build succeeds, so a failed or killed build damages
nothing that came before.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
import uuid
from pathlib import Path

from llmbuild import __version__
from llmbuild import targets as registry
from llmbuild.cache import Cache, Entry, link_tree
from llmbuild.config import BuildConfig
from llmbuild.errors import GateFailed, InvalidInput, LicenseViolation
from llmbuild.hashing import sha256_json
from llmbuild.plain import plain
from llmbuild.plan import check_model, make_plan
from llmbuild.result import ArtifactResult, BuildResult, ModelResult
from llmbuild.stages.acquire import ModelRef
from llmbuild.ui import UI

# bump a stage's version when its outputs change meaning for the same inputs
# (verify 2, evaluate 2: quantized HF-layout checkpoints are read by ModelOpt's modules and answer golden sets;
# evalref 2: evalref.json holds the settings the artifact side reads, so their keys follow them;
# reference 2, verify 3: a mixture of experts' routing is recorded and compared, issue 11)
# (client 1: golden set, multiple choice and speed through each artifact's client and its own tokenizer)
STAGE_VERSIONS = {"acquire": 1, "license": 1, "finetune": 1, "reference": 2, "export": 1, "verify": 3,
                  "evalref": 2, "evaluate": 2, "contamination": 1, "client": 1}


def tool_versions(dists) -> dict[str, str]:
    return {d: _dist_version(d) for d in dists}


@functools.cache
def _dist_version(dist: str) -> str:
    # once per process: every stage key asks, and each lookup scans site-packages (a third of an unchanged
    # rebuild's time before this cache)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def default_model_name(bc: BuildConfig) -> str:
    if bc.build.model_name:
        return bc.build.model_name
    m = bc.model
    if m.source.value == "hub":
        return m.repo_id.split("/")[-1]
    if m.source.value == "local":
        return Path(m.path).resolve().name
    return f"{bc.recipe}-{m.architecture}"


class Build:
    def __init__(self, bc: BuildConfig, cache: Cache, ui: UI, build_dir: Path):
        self.bc, self.cache, self.ui, self.dir = bc, cache, ui, build_dir
        self.stages: list[dict] = []
        self.dry = bc.build.dry_run
        self.model_name = default_model_name(bc)
        self.artifacts: dict[str, ArtifactResult] = {}
        self.license_decision = None
        self.license_files: dict[str, bytes] = {}
        self.model: ModelRef | None = None
        self.base_model: ModelRef | None = None  # the acquired model when fine-tuning replaced self.model
        self.finetune_record: dict | None = None
        self.finetune_out: Path | None = None
        self.warnings: list[str] = []
        self.eval_source: dict | None = None  # the source model's evaluation figures (evalref stage)
        self.contamination_record: dict | None = None  # fine-tuning data vs evaluation sets (contamination stage)
        self.context: int | None = None  # every artifact is verified within it (plan.check_model)

    def result(self, status: str, error: str | None, seconds: float, tools: dict, host: dict) -> BuildResult:
        """What the reports render: the typed result of this build as it stands."""
        bc = self.bc

        def model(ref: ModelRef | None) -> ModelResult | None:
            return ModelResult(ref.dir, ref.digest, ref.files, ref.record) if ref else None

        e = bc.eval
        settings = {k: plain(getattr(e, k)) for k in ("text", "heldout_text", "window", "max_windows", "tasks",
                                                      "golden", "golden_prompt", "golden_max_new_tokens", "speed",
                                                      "speed_prompt_tokens", "speed_new_tokens", "speed_repeats",
                                                      "threads", "harness", "contamination")}
        return BuildResult(
            dir=self.dir, recipe=bc.recipe, recipe_file=bc.recipe_file, config=bc.raw, model_name=self.model_name,
            source=bc.model.source.value, repo_id=bc.model.repo_id if bc.model.source.value == "hub" else None,
            finetune_method=bc.finetune.method, eval_settings=settings, status=status, error=error,
            seconds=seconds, tools=tools, host=host, model=model(self.model), base_model=model(self.base_model),
            finetune=self.finetune_record, finetune_dir=self.finetune_out, license_decision=self.license_decision,
            license_files=self.license_files if self.license_decision is not None else {}, stages=self.stages,
            artifacts=list(self.artifacts.values()), warnings=self.warnings, eval_source=self.eval_source,
            contamination=self.contamination_record)

    # -- the stage runner -------------------------------------------------------------------------
    @staticmethod
    def key(kind: str, key_parts: dict, tools=()) -> str:
        return sha256_json({"stage": kind, "version": STAGE_VERSIONS[kind.split("-")[0]], "llmbuild": __version__,
                            "tools": tool_versions(tools), **key_parts})

    def stage(self, name: str, kind: str, key_parts: dict, fn, tools=(), commit: bool = True) -> Entry | None:
        key = self.key(kind, key_parts, tools)
        t0 = time.monotonic()
        hit, damaged = self.cache.get(kind, key) if commit else (None, None)
        note: dict = {}
        if damaged:
            # a file of the committed entry changed after the commit (edited in a build folder, truncated
            # by a full disk, bit rot): never reuse it; say why in the log and the manifest
            note["reason"] = f"cache entry damaged: {damaged}"
            self.ui.warn(f"[{name}] cache entry {key[:12]} refused: {damaged}; running the stage again")
        if hit:
            status = "reused"
            self.ui.say(f"[{name}] reused from cache ({key[:12]})", style="dim")
            entry = hit
        elif self.dry:
            self.ui.say(f"[{name}] would run ({key[:12]})")
            self.stages.append({"stage": name, "key": key, "status": "would run", "seconds": 0.0, **note})
            return None
        else:
            self.ui.say(f"[{name}] running")
            # another build may be computing this very stage (a sweep, a second user on a shared cache):
            # cache.run waits for its lock and then reuses its entry instead of computing it twice
            try:
                entry = self.cache.run(kind, key, _with_pause_point(name, fn), commit=commit, on_wait=lambda: self.ui.say(
                    f"[{name}] waiting: another build is running this stage ({key[:12]})"))
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                # Cache.run removed the partial output: name the file, keep no entry (exit 2)
                raise InvalidInput(f"{e.filename or self.cache.root}: no space left on device while {name} wrote it; "
                                   f"the partial output was removed and the cache keeps no entry for {name}") from None
            if entry.damaged and not damaged:
                note["reason"] = f"cache entry damaged: {entry.damaged}"
                self.ui.warn(f"[{name}] cache entry {key[:12]} refused: {entry.damaged}; ran the stage again")
            if entry.waited >= 0.05:
                note["waited_s"] = round(entry.waited, 3)
            if entry.reused:
                status = "reused"
                self.ui.say(f"[{name}] reused from cache after waiting {entry.waited:.1f} s for another build",
                            style="dim")
            else:
                status = "run"
                self.ui.say(f"[{name}] done in {time.monotonic() - t0:.1f} s", style="green")
        self.stages.append({"stage": name, "key": key, "status": status,
                            "seconds": round(time.monotonic() - t0, 3), **note})
        return entry

    # -- the build ----------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Run every stage; returns the failed gates (empty when all passed)."""
        bc = self.bc
        make_plan(bc)
        self.model = self.acquire()
        if self.model is None:
            return []
        from llmbuild.archs import for_config

        arch = for_config(self.model.record["config"], str(self.model.dir / "config.json"))
        checked = check_model(bc, arch, self.model.dir)
        self.warnings += checked.warnings
        self.context = checked.context
        if bc.finetune.method != "none":
            from llmbuild.finetune import stage as ft

            ft.plan_check(bc.finetune, self.model.record["config"])
        for w in self.warnings:
            self.ui.warn(w)
        self.license_gate()
        if bc.finetune.method != "none":
            self.base_model, self.model = self.model, self.finetune()
            if self.model is None:
                return []
        ref = self.reference()
        eref = self.eval_reference()
        failed = self.contamination()
        for t in bc.targets:
            failed += self.target(t, ref, eref)
        return failed

    def acquire(self) -> ModelRef | None:
        from llmbuild.stages import acquire

        m, sc = self.bc.model, self.cache.stat_cache
        t0 = time.monotonic()
        if m.source.value == "init":
            key_cfg = acquire.init_key_config(m, Path.cwd(), sc)
            entry = self.stage("acquire", "acquire", {"init": key_cfg, "dtype": m.dtype.value},
                               lambda out: acquire.run_init(m, out, sc), tools=acquire.INIT_TOOLS)
            if entry is None:
                return None
            rec = dict(entry.record)
            model_dir = entry.out / rec["model_dir"]
        else:
            if m.source.value == "hub":
                rec = acquire.acquire_hub(m.repo_id, m.revision, m.allow_pickle, sc, m.trust_remote_code,
                                          self.warnings)
            else:
                rec = acquire.acquire_local(m.path, m.allow_pickle, sc, m.trust_remote_code, self.warnings)
            model_dir = Path(rec["model_dir"])
            self.ui.say(f"[acquire] {rec['source']} checkpoint {model_dir} ({len(rec['files'])} files hashed)")
            self.stages.append({"stage": "acquire", "key": rec["model_digest"], "status": "checked",
                                "seconds": round(time.monotonic() - t0, 3)})
        return ModelRef(model_dir, rec["model_digest"], rec["files"], rec)

    def finetune(self) -> ModelRef | None:
        """Train, merge, and hand every later stage the merged checkpoint instead of the acquired one."""
        from llmbuild.finetune import stage as ft
        from llmbuild.hashing import file_entries, tree_digest

        cfg = self.bc.finetune
        parts = {"model": self.model.digest, **ft.key_inputs(cfg, self.cache.stat_cache.digest)}
        tools = ft.tools(cfg)
        # checkpoints for resuming live beside the cache, keyed like the stage: a killed run resumes,
        # and nothing there is ever mistaken for a finished model
        work = self.cache.root / "work" / "finetune" / self.key("finetune", parts, tools)
        base_dir = self.model.dir
        with self.ui.progress("finetune") as cb:
            def progress(step, total, loss, left):
                cb(step, total, f"loss {loss:.3f}, {left:.0f} s left")

            entry = self.stage("finetune", "finetune", parts,
                               lambda out: ft.run(base_dir, cfg, out, work, progress), tools=tools)
        if entry is None:
            return None
        shutil.rmtree(work, ignore_errors=True)
        r = self.finetune_record = entry.record
        self.finetune_out = entry.out
        merged = entry.out / r["merged_dir"]
        files = file_entries(merged, self.cache.stat_cache)
        rec = dict(self.model.record, model_dir=str(merged), files=files, model_digest=tree_digest(files),
                   config=json.loads((merged / "config.json").read_text()))
        g = r.get("golden") or {}
        golden = (f", golden exact match {g['before']['exact_match']:.2f} -> {g['after']['exact_match']:.2f}"
                  if g else "")
        self.ui.say(f"[finetune] {r['method']}: {r['steps']} steps, eval loss {r['eval_loss_before']:.3f} -> "
                    f"{r['eval_loss_after']:.3f}{golden}")
        return ModelRef(merged, rec["model_digest"], files, rec)

    def license_gate(self) -> None:
        from llmbuild import licenses

        bc = self.bc
        facts = licenses.BuildFacts(
            model_name=self.model_name,
            base_model=bc.model.repo_id if bc.model.source.value == "hub" else (
                Path(bc.model.path).name if bc.model.source.value == "local" else None),
            source=bc.model.source.value,
            finetune=bc.finetune.method,
            targets={t.name: {"backend": t.backend, "precision": registry.backend(t.backend).precision(t.options),
                              "quantized": registry.backend(t.backend).quantized(t.options)} for t in bc.targets},
        )
        upstream = self.model.dir if bc.model.source.value != "init" else None
        lic = bc.license
        if bc.finetune.method != "none":
            from llmbuild.finetune.stage import dataset_licenses
            from llmbuild.licenses.config import DatasetLicense

            # the fine-tuning data's licenses are judged by the policy like the model's own
            lic = dataclasses.replace(lic, training_data=[
                *lic.training_data, *(DatasetLicense(name=d["path"], license=d["license"])
                                      for d in dataset_licenses(bc.finetune))])
        decision = licenses.evaluate(lic, upstream, facts)
        self.license_decision = decision
        self.license_files = licenses.artifact_files(decision, upstream)
        licenses.write_reports(decision, self.dir)
        for w in getattr(decision, "warnings", []) or []:
            self.ui.warn(f"license: {w}")
        self.stages.append({"stage": "license", "key": None, "status": "checked", "seconds": 0.0,
                            "verdict": decision.verdict})
        self.ui.say(f"[license] {decision.verdict}", style="red" if decision.verdict == "fail" else "green")
        if decision.verdict == "fail":
            reasons = [c for c in decision.clauses if _get(c, "verdict") == "fail"]
            first = _get(reasons[0], "reason") if reasons else "policy not met"
            raise LicenseViolation(f"license: {first} (see {self.dir / 'LICENSE_REPORT.md'})")

    def reference(self) -> Entry | None:
        from llmbuild.stages import reference

        e, m = self.bc.eval, self.bc.model
        parts = {"model": self.model.digest, "probes": list(e.probes), "max_tokens": e.max_tokens,
                 "dtype": m.dtype.value}
        return self.stage("reference", "reference", parts,
                          lambda out: reference.run(self.model.dir, list(e.probes), e.max_tokens, m.dtype.value,
                                                    m.trust_remote_code, out), tools=reference.TOOLS)

    def eval_reference(self) -> Entry | None:
        """The source side of the evaluate stage (token ids, source logits and figures), once per build."""
        from llmbuild.stages import evaluate

        e, m = self.bc.eval, self.bc.model
        if not evaluate.enabled(e):
            return None
        parts = {"model": self.model.digest, "dtype": m.dtype.value,
                 "eval": evaluate.key_parts(e, self.cache.stat_cache.digest)}
        if self.context != self.model.record["config"].get("max_position_embeddings"):
            parts["context"] = self.context  # an artifact declares a shorter context: windows fit in it
        entry = self.stage("evalref", "evalref", parts,
                           lambda out: evaluate.prepare(self.model.dir, e, m.dtype.value, m.trust_remote_code, out,
                                                        context=self.context),
                           tools=evaluate.TOOLS)
        if entry is not None:
            self.eval_source = entry.record
        return entry

    def contamination(self) -> list[dict]:
        """N-gram overlap of the fine-tuning data with every evaluation set; returns its failed gates."""
        from llmbuild.evaluation import contamination as ct

        e, ft = self.bc.eval, self.bc.finetune
        if not ct.enabled(e, ft):
            return []
        entry = self.stage("contamination", "contamination", ct.key_parts(e, ft, self.cache.stat_cache.digest),
                           lambda out: ct.run(e, ft, out), tools=ct.TOOLS)
        if entry is None:
            return []
        self.contamination_record, line, failed = ct.report(entry.record, e.contamination.max_overlap)
        self.ui.say(f"[contamination] {line}", style="red" if failed else None)
        return failed

    def artifact_meta(self):
        from llmbuild import licenses
        from llmbuild.targets.common import ArtifactMeta

        lm = licenses.artifact_metadata(self.license_decision) if self.license_decision else {}
        m = self.bc.model
        base = m.repo_id if m.source.value == "hub" else None
        return ArtifactMeta(
            name=self.model_name, license_id=lm.get("license_id"), license_name=lm.get("license_name"),
            license_link=lm.get("license_link"), base_model=base,
            base_model_url=f"https://huggingface.co/{base}" if base else None,
            base_model_organization=base.split("/")[0] if base and "/" in base else None,
            quantized_by=f"llmbuild {__version__}",
        )

    def target(self, t, ref: Entry | None, eref: Entry | None = None) -> list[dict]:
        """Export, verify and evaluate one target; returns its failed gates."""
        from llmbuild.checkpoint import open_checkpoint

        b = registry.backend(t.backend)
        options = plain(t.options)
        gates_cfg = options.pop("gates")
        meta = self.artifact_meta()
        ckpt_dir, allow_pickle = self.model.dir, self.bc.model.allow_pickle

        def do_export(out: Path) -> dict:
            ckpt = open_checkpoint(ckpt_dir, allow_pickle=allow_pickle)
            with self.ui.progress(f"export:{t.name}") as cb:
                return b.export(ckpt, t.options, out, meta, cb)

        exp = self.stage(f"export:{t.name}", f"export-{t.backend}",
                         {"model": self.model.digest, "backend": b.name, "options": options,
                          "meta": plain(meta), "extra": b.key_extra(t.options)},
                         do_export, tools=b.tools)
        art = self.artifacts[t.name] = ArtifactResult(t.name, t.backend, b.precision(t.options),
                                                      b.quantized(t.options), options, library=b.card_library,
                                                      hub_repo=b.hub_repo)
        if exp is None:
            return []
        art.export = {k: v for k, v in exp.record.items() if k not in ("out_files",)}
        art.files = exp.files
        art.usage, art.notes = b.usage(t.name, art.export, sorted(exp.files)), b.notes(art.export)
        art.serving = b.serving(t.name, art.export)
        dest = self.dir / "artifacts" / t.name
        link_tree(exp.out, dest)
        for fname, data in self.license_files.items():
            (dest / fname).write_bytes(data)
        if ref is None:
            return []
        gates = {**b.default_gates(t.options), **{k: v for k, v in gates_cfg.items() if v is not None}}
        art.gates = {k: v for k, v in gates.items() if v is not None}
        if not b.runtime_available():
            reason = f"{b.runtime.dist} is not installed"
            art.verification = {"status": "unverified", "reason": reason}
            self.stages.append({"stage": f"verify:{t.name}", "key": None, "status": "skipped", "seconds": 0.0})
            if eref is not None:
                art.evaluation = {"status": "skipped", "reason": reason}
            return []
        failed = self.verify(t, b, exp, ref, art, gates)
        if eref is not None:
            failed += self.evaluate(t, b, exp, eref, art, gates)
            failed += self.client_eval(t, b, exp, eref, art, gates)
        return failed

    def verify(self, t, b, exp: Entry, ref: Entry, art: ArtifactResult, gates: dict) -> list[dict]:
        from llmbuild.stages import verify

        kv = self.bc.eval.kv_check
        ver = self.stage(f"verify:{t.name}", f"verify-{t.backend}",
                         # the loader too: the same bytes read by another loader is another verification
                         {"artifact": exp.digest, "reference": ref.digest, "kv_check": kv, "backend": b.name,
                          "loader": exp.record.get("loader")},
                         lambda out: verify.run(b, exp.out, exp.record, ref.out / "reference.npz", kv),
                         tools=(b.runtime.dist, "numpy"))
        if ver is None:
            return []
        results = verify.apply_gates(ver.record, gates)
        status = "passed" if all(r["passed"] for r in results) else "failed"
        art.verification = {"status": status, "runtime": b.runtime.dist,
                            "runtime_version": tool_versions([b.runtime.dist])[b.runtime.dist],
                            "metrics": ver.record["metrics"], "kv_metrics": ver.record.get("kv_metrics"),
                            "gates": results, **({"routing": ver.record["routing"]} if ver.record.get("routing") else {})}
        m = ver.record["metrics"]
        routing = ver.record.get("routing") or {}
        self.ui.say(f"[verify:{t.name}] {status}: top-1 {m['top1']:.3f}, KLD {m['kld_mean']:.2e}, "
                    f"max |dlogit| {m['max_abs_diff']:.3g}"
                    + (f", routing agreement {routing['agreement']:.3f}" if "agreement" in routing else ""),
                    style="green" if status == "passed" else "red")
        return [dict(r, target=t.name) for r in results if not r["passed"]]

    def evaluate(self, t, b, exp: Entry, eref: Entry, art: ArtifactResult, gates: dict) -> list[dict]:
        """Parity, perplexity, multiple choice, golden set and speed through the artifact's runtime."""
        from llmbuild.stages import evaluate

        e, m = self.bc.eval, self.bc.model
        ev = self.stage(f"evaluate:{t.name}", f"evaluate-{t.backend}",
                        {"artifact": exp.digest, "evalref": eref.digest, "model": self.model.digest,
                         "backend": b.name, "threads": e.threads, "loader": exp.record.get("loader")},
                        lambda out: evaluate.run(b, t.backend, exp.out, exp.record, eref.out, eref.record,
                                                 self.model.dir, e, m.trust_remote_code),
                        tools=(b.runtime.dist, *evaluate.TOOLS))
        if ev is None:
            return []
        results = evaluate.apply_gates(ev.record, gates, e)
        status = "passed" if all(r["passed"] for r in results) else "failed"
        art.evaluation = {**{k: v for k, v in ev.record.items() if k != "out_files"}, "status": status,
                          "gates": results, "runtime_version": tool_versions([b.runtime.dist])[b.runtime.dist]}
        self.ui.say(f"[evaluate:{t.name}] {status}: {_eval_line(ev.record)}",
                    style="green" if status == "passed" else "red")
        return [dict(r, target=t.name) for r in results if not r["passed"]]


    def client_eval(self, t, b, exp: Entry, eref: Entry, art: ArtifactResult, gates: dict) -> list[dict]:
        """Golden set, multiple choice and speed through the artifact's client and its own tokenizer."""
        from llmbuild.evaluation import clients

        e, m = self.bc.eval, self.bc.model
        if b.client is None or not clients.enabled(e):
            return []
        if not b.client_available():
            art.client = {"status": "skipped", "client": b.client.dist,
                          "reason": f"{b.client.dist} is not installed: {b.client.install}"}
            return []
        ev_record = (art.evaluation or {})
        c = self.stage(f"client:{t.name}", f"client-{t.backend}",
                       {"artifact": exp.digest, "evalref": eref.digest, "model": self.model.digest,
                        "backend": b.name, "settings": clients.key_parts(b, e), "loader": exp.record.get("loader")},
                       lambda out: clients.run(b, exp.out, exp.record, eref.out, eref.record, self.model.dir, e,
                                               m.trust_remote_code, ev_record),
                       tools=(b.client.dist, b.runtime.dist, "transformers", "tokenizers"))
        if c is None:
            return []
        results = clients.apply_gates(c.record, gates)
        status = "passed" if all(r["passed"] for r in results) else "failed"
        art.client = {**{k: v for k, v in c.record.items() if k != "out_files"}, "status": status, "gates": results}
        self.ui.say(f"[client:{t.name}] {status}: {c.record['client']} {clients.describe(c.record)}",
                    style="green" if status == "passed" else "red")
        return [dict(r, target=t.name) for r in results if not r["passed"]]


def _with_pause_point(name: str, fn):
    """fn, preceded by the test-only pause point (llmbuild/testhooks.py; inert unless its variables are set)."""
    from llmbuild.testhooks import pause_point

    def run(out: Path):
        pause_point(name, out)
        return fn(out)

    return run


def _eval_line(rec: dict) -> str:
    """The evaluation in one console line."""
    parts = []
    if p := rec.get("parity"):
        parts.append(f"KLD {p['kld_mean']:.2e}, top-1 {p['top1']:.3f}, PPL ratio {p['ppl_ratio']:.4f}")
    if p := rec.get("perplexity"):
        parts.append(f"held-out PPL {p['ppl']:.3f}")
    for name, r in (rec.get("tasks") or {}).items():
        parts.append(f"{name} acc {r['acc']:.3f}")
    if (g := rec.get("golden")) and "exact_match" in g:
        parts.append(f"golden EM {g['exact_match']:.3f}")
    if (s := rec.get("speed")) and s.get("gen_tokens_per_s"):
        parts.append(f"{s['gen_tokens_per_s']:.0f} gen tok/s")
    return "; ".join(parts) or "nothing to evaluate"


def _get(obj, name):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _new_build_dir(root: Path, config_digest: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    base = time.strftime("%Y%m%d-%H%M%S") + "-" + config_digest[:8]
    for i in range(1000):
        d = root / (base if i == 0 else f"{base}.{i}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a build folder under {root}")


def _point_latest(root: Path, build_dir: Path) -> None:
    link = root / "latest"
    tmp = root / f".latest.{os.getpid()}.{uuid.uuid4().hex[:8]}"  # unique across machines sharing the folder
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(build_dir.name)
    os.replace(tmp, link)  # atomic: readers see the old or the new build, never neither


def _check_writable(folder: Path, config_key: str) -> None:
    """Fail before any work, naming the key, when builds cannot be written under folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InvalidInput(f"{config_key}: {folder} is not writable ({e.strerror}); point {config_key} at a "
                           f"writable folder") from None


def run_build(bc: BuildConfig, outcome: dict | None = None) -> int:
    """Build; `outcome`, when given, receives the build folder as soon as it exists (for sweep summaries)."""
    from llmbuild.report import document

    ui = UI()
    outputs = Path(bc.build.outputs_dir)
    if not bc.build.dry_run:
        _check_writable(outputs / bc.recipe, "build.outputs_dir")
    cache_key = "build.cache_dir" if bc.build.cache_dir else "build.outputs_dir"
    cache = Cache(Path(bc.build.cache_dir) if bc.build.cache_dir else outputs / ".cache", config_key=cache_key,
                  readonly=bc.build.dry_run)  # a dry run writes nothing, so it also plans on a read-only cache
    started = time.time()
    if bc.build.dry_run:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            b = Build(bc, cache, ui, Path(tmp))
            b.run()
        return 0
    build_dir = _new_build_dir(outputs / bc.recipe, sha256_json(bc.raw))
    if outcome is not None:
        outcome["build_dir"] = str(build_dir.resolve())
    ui.attach_log(build_dir / "build.log")
    ui.say(f"llmbuild {__version__}: recipe {bc.recipe} -> {build_dir}")
    b = Build(bc, cache, ui, build_dir)
    status, error, failed = "failed", None, []
    try:
        failed = b.run()
        status = "gate failed" if failed else "built"
    except InvalidInput:
        # nothing was built: leave no folder behind (the cache is untouched by construction)
        ui.close()
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    except LicenseViolation as e:
        status, error = "license violation", str(e)
        raise
    except BaseException as e:
        error = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise
    finally:
        cache.stat_cache.save()
        if build_dir.exists():
            try:
                from llmbuild.testhooks import pause_point

                pause_point("document")
                document.write_all(b.result(status, error, time.time() - started, tool_versions(_all_tools(bc)),
                                            _host()))
            finally:
                ui.close()
    if failed:
        worst = failed[0]
        # eval.* gates name their own key; a target's gates live under targets.NAME.gates
        key = worst.get("key") or f"targets.{worst['target']}.gates.{worst['gate']}"
        where = f" ({worst['target']})" if worst.get("key") and worst.get("target") else ""
        raise GateFailed(f"{key}: {worst['figure']}{where} = {worst['value']:.4g}, limit {worst['limit']} "
                         f"({len(failed)} gate(s) failed; see {build_dir / 'README.md'})")
    _point_latest(outputs / bc.recipe, build_dir)
    reused = sum(1 for s in b.stages if s["status"] in ("reused", "checked"))
    ui.say(f"built {bc.recipe} in {time.time() - started:.1f} s ({reused}/{len(b.stages)} stages reused or "
           f"checked): {build_dir}", style="bold green")
    for w in b.warnings:
        ui.warn(w)
    print(build_dir)
    return 0


def _all_tools(bc: BuildConfig) -> list[str]:
    from llmbuild.stages import acquire, evaluate, reference

    tools = ["hydra-core", "omegaconf", "huggingface-hub", "safetensors", *acquire.INIT_TOOLS, *reference.TOOLS]
    if evaluate.enabled(bc.eval):
        tools += list(evaluate.TOOLS) + (["lm-eval"] if bc.eval.harness.tasks else [])
    if bc.finetune.method != "none":
        from llmbuild.finetune import stage as ft

        tools += [*ft.tools(bc.finetune), "matplotlib"]
    for t in bc.targets:
        b = registry.backend(t.backend)
        tools += [*b.tools, b.runtime.dist]
    return list(dict.fromkeys(tools))


def _host() -> dict:
    return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "cpus": os.cpu_count()}


def json_dump(obj) -> str:
    return json.dumps(plain(obj), indent=2, sort_keys=False, default=str)
