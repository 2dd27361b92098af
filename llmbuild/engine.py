"""Run a build: the planned stages in plan order, each keyed from its declaration and reused from the
cache when it can be.

`make_plan` (llmbuild/plan.py) declares the stages and their order; `declaration.stage_key` keys each
one from its declaration (the sha256 of a sorted JSON of its kind and version, its recipe subtree, the
digests of its inputs and the versions of its tools: design.md, "Key"). The engine loops over them: a
stage whose key is in the cache is reused, any other runs in a temporary folder and is committed
(llmbuild/cache.py); then what the stage means for the build (the model the targets are built from, the
license decision, an artifact's files and gates) is taken into the typed result the reports render.
The build folder gets hard links to the cached outputs plus the documents written from what the stages
recorded. A build folder is never reused: every build gets a new id, and outputs/<recipe>/latest moves
only when a build succeeds, so a failed or killed build damages nothing that came before.

A dry run walks the same plan over a read-only cache: each stage is keyed and looked up, what is cheap
and what the build itself does before any work runs (the plan's checks, hashing a local checkpoint, the
model checks, the license gate), nothing heavy runs, nothing is written, and llmbuild/dry_run.py prints
the plan with every key, or the earlier stage a key depends on.
"""

from __future__ import annotations

import dataclasses
import errno
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
from llmbuild.cache import Cache, link_tree
from llmbuild.config import BuildConfig
from llmbuild.declaration import NotInDryRun, Output, Pending, Ref, Stage, StageContext, stage_key, tool_versions
from llmbuild.errors import GateFailed, InvalidInput, LicenseViolation
from llmbuild.hashing import sha256_json
from llmbuild.plain import plain
from llmbuild.plan import Plan, check_model, default_model_name, make_plan
from llmbuild.result import ArtifactResult, BuildResult, ModelResult
from llmbuild.stages.acquire import ModelRef
from llmbuild.ui import UI

__all__ = ["Build", "default_model_name", "dry_run", "run_build", "tool_versions"]


class Build:
    def __init__(self, bc: BuildConfig, cache: Cache, ui: UI, build_dir: Path):
        self.bc, self.cache, self.ui, self.dir = bc, cache, ui, build_dir
        self.stages: list[dict] = []  # one row per planned stage, in run order: the manifest's "stages"
        self.dry = bc.build.dry_run
        self.plan: Plan | None = None
        self.outputs: dict[str, Output] = {}  # finished (or reused) stages by name: what later keys are made of
        self.notes: dict[str, str] = {}  # a dry run's line per stage (what a build would print after it)
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
        self._targets = {t.name: t for t in bc.targets}
        self._gates: dict[str, dict] = {}  # target -> the gates its verify and evaluate records are held to

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

    # -- the loop over the plan ---------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Run every planned stage; returns the failed gates (empty when all passed)."""
        self.plan = make_plan(self.bc)
        failed: list[dict] = []
        for st in self.plan:
            failed += self.step(st)
        return failed

    def value_of(self, ref: Ref):
        """An upstream output for a key; Pending when that stage has not run (a dry run)."""
        out = self.outputs.get(ref.stage)
        if out is None:
            raise Pending(ref.stage)
        return out.get(ref.field)

    def key_of(self, st: Stage) -> str:
        return stage_key(st, self.value_of, self.cache.stat_cache.digest)

    def step(self, st: Stage) -> list[dict]:
        """Key, run or reuse one stage, then take its result into the build; returns its failed gates."""
        if st.skip:
            self.stages.append({"stage": st.name, "key": None, "status": "skipped", "seconds": 0.0, "reason": st.skip})
            self._skipped(st)
            return []
        try:
            key = self.key_of(st)
        except Pending as p:
            if not self.dry:  # every upstream of a planned stage ran before it: the plan is out of order
                raise RuntimeError(f"stage {st.name} needs {p.stage}, which has not run") from None
            self.stages.append({"stage": st.name, "key": None, "status": "depends on an earlier stage",
                                "after": p.stage, "seconds": 0.0})
            return []
        out = self.execute(st, key)
        if out is None:
            return []
        self.outputs[st.name] = out
        return getattr(self, f"_after_{st.role}")(st, out) or []

    def execute(self, st: Stage, key: str) -> Output | None:
        """Run or reuse the stage under its key; None in a dry run when it would run."""
        ctx = StageContext(key=key, outputs=self.outputs, stat_cache=self.cache.stat_cache,
                           cache_root=self.cache.root, build_dir=self.dir, dry=self.dry, warnings=self.warnings,
                           progress=self.ui.progress, reads=tuple(st.upstream()))
        t0 = time.monotonic()
        if not st.cached:
            # checked by every build (a local checkpoint is hashed through the stat cache, the license judged)
            try:
                record = st.run(ctx, None)
            except NotInDryRun as e:
                self.stages.append({"stage": st.name, "key": key, "status": "would download", "seconds": 0.0,
                                    "reason": str(e)})
                return None
            self.stages.append({"stage": st.name, "key": key, "status": "checked",
                                "seconds": round(time.monotonic() - t0, 3)})
            return Output(None, record, key=key)
        name, kind = st.name, st.kind
        hit, damaged = self.cache.get(kind, key)
        note: dict = {}
        if damaged:
            # a file of the committed entry changed after the commit (edited in a build folder, truncated
            # by a full disk, bit rot): never reuse it; say why in the log and the manifest
            note["reason"] = f"cache entry damaged: {damaged}"
            self.ui.warn(f"[{name}] cache entry {key[:12]} refused: {damaged}; running the stage again")
        if hit:
            status = "cached" if self.dry else "reused"
            self.say(f"[{name}] reused from cache ({key[:12]})", style="dim")
            entry = hit
        elif self.dry:
            self.stages.append({"stage": name, "key": key, "status": "would run", "seconds": 0.0, **note})
            return None
        else:
            self.ui.say(f"[{name}] running")
            # another build may be computing this very stage (a sweep, a second user on a shared cache):
            # cache.run waits for its lock and then reuses its entry instead of computing it twice
            try:
                entry = self.cache.run(kind, key, _with_pause_point(name, lambda out: st.run(ctx, out)),
                                       on_wait=lambda: self.ui.say(
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
        return Output(entry.digest, entry.record, entry.out, key=key)

    def say(self, msg: str, style: str | None = None) -> None:
        """A stage's console line; a dry run keeps it for its plan instead (llmbuild/dry_run.py)."""
        if not self.dry:
            self.ui.say(msg, style=style)
            return
        name, _, text = msg.partition("] ")
        if name.startswith("[") and text and not text.startswith("reused from cache"):
            self.notes[name[1:]] = text

    # -- what each stage's result means for the build -------------------------------------------------
    def _after_acquire(self, st: Stage, out: Output) -> None:
        """The model every later stage reads, then the model checks (header reads, before any work)."""
        from llmbuild.archs import for_config

        rec = out.record
        model_dir = out.dir / rec["model_dir"] if st.cached else Path(rec["model_dir"])
        self.model = ModelRef(model_dir, rec["model_digest"], rec["files"], rec)
        if not st.cached:
            self.say(f"[acquire] {rec['source']} checkpoint {model_dir} ({len(rec['files'])} files hashed)")
        arch = for_config(rec["config"], str(model_dir / "config.json"))
        checked = check_model(self.bc, arch, model_dir)
        self.warnings += checked.warnings
        self.context = checked.context
        for w in self.warnings:
            self.ui.warn(w)
        # evalref's key holds the context only when an artifact declares a shorter one than the model
        shorter = checked.context if checked.context != rec["config"].get("max_position_embeddings") else None
        out.values.update(model=rec["model_digest"], model_dir=model_dir, context=checked.context,
                          shorter_context=shorter)

    def _after_license(self, st: Stage, out: Output) -> None:
        decision = out.record["decision"]
        self.license_decision = decision
        self.license_files = out.record["files"]
        self.stages[-1]["verdict"] = decision.verdict
        out.values["meta"] = self.artifact_meta()  # stamped into every artifact, so it keys every export
        for w in getattr(decision, "warnings", []) or []:
            self.ui.warn(f"license: {w}")
        failing = decision.verdict == "fail"
        first = None
        if failing:
            reasons = [c for c in decision.clauses if _get(c, "verdict") == "fail"]
            first = _get(reasons[0], "reason") if reasons else "policy not met"
        self.say(f"[license] {decision.verdict}" + (f": {first} (the build stops here, exit 3)"
                                                     if failing and self.dry else ""),
                 style="red" if failing else "green")
        if failing and not self.dry:
            raise LicenseViolation(f"license: {first} (see {self.dir / 'LICENSE_REPORT.md'})")

    def _after_finetune(self, st: Stage, out: Output) -> None:
        """Every later stage reads the merged checkpoint instead of the acquired one."""
        from llmbuild.hashing import file_entries, tree_digest

        if not self.dry:
            shutil.rmtree(self.cache.root / "work" / "finetune" / out.key, ignore_errors=True)
        r = self.finetune_record = out.record
        self.finetune_out = out.dir
        merged = out.dir / r["merged_dir"]
        files = file_entries(merged, self.cache.stat_cache)
        rec = dict(self.model.record, model_dir=str(merged), files=files, model_digest=tree_digest(files),
                   config=json.loads((merged / "config.json").read_text()))
        self.base_model, self.model = self.model, ModelRef(merged, rec["model_digest"], files, rec)
        out.values.update(model=rec["model_digest"], model_dir=merged)
        g = r.get("golden") or {}
        golden = (f", golden exact match {g['before']['exact_match']:.2f} -> {g['after']['exact_match']:.2f}"
                  if g else "")
        self.say(f"[finetune] {r['method']}: {r['steps']} steps, eval loss {r['eval_loss_before']:.3f} -> "
                 f"{r['eval_loss_after']:.3f}{golden}")

    def _after_reference(self, st: Stage, out: Output) -> None:
        return None  # verify reads its output

    def _after_evalref(self, st: Stage, out: Output) -> None:
        self.eval_source = out.record

    def _after_contamination(self, st: Stage, out: Output) -> list[dict]:
        from llmbuild.evaluation import contamination as ct

        self.contamination_record, line, failed = ct.report(out.record, self.bc.eval.contamination.max_overlap)
        self.say(f"[contamination] {line}", style="red" if failed else None)
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

    def _after_export(self, st: Stage, out: Output) -> None:
        t = self._targets[st.target]
        b = registry.backend(t.backend)
        options = plain(t.options)
        gates_cfg = options.pop("gates")
        art = self.artifacts[t.name] = ArtifactResult(t.name, t.backend, b.precision(t.options),
                                                      b.quantized(t.options), options, library=b.card_library,
                                                      hub_repo=b.hub_repo)
        art.export = {k: v for k, v in out.record.items() if k not in ("out_files",)}
        art.files = out.record["out_files"]
        art.usage, art.notes = b.usage(t.name, art.export, sorted(art.files)), b.notes(art.export)
        art.serving = b.serving(t.name, art.export)
        gates = self._gates[t.name] = {**b.default_gates(t.options),
                                       **{k: v for k, v in gates_cfg.items() if v is not None}}
        art.gates = {k: v for k, v in gates.items() if v is not None}
        if self.dry:
            return
        dest = self.dir / "artifacts" / t.name
        link_tree(out.dir, dest)
        for fname, data in self.license_files.items():
            (dest / fname).write_bytes(data)

    def _after_verify(self, st: Stage, out: Output) -> list[dict]:
        from llmbuild.stages import verify

        t, art = self._targets[st.target], self.artifacts[st.target]
        b = registry.backend(t.backend)
        results = verify.apply_gates(out.record, self._gates[t.name])
        status = "passed" if all(r["passed"] for r in results) else "failed"
        art.verification = {"status": status, "runtime": b.runtime.dist,
                            "runtime_version": tool_versions([b.runtime.dist])[b.runtime.dist],
                            "metrics": out.record["metrics"], "kv_metrics": out.record.get("kv_metrics"),
                            "gates": results, **({"routing": out.record["routing"]} if out.record.get("routing") else {})}
        m = out.record["metrics"]
        routing = out.record.get("routing") or {}
        self.say(f"[verify:{t.name}] {status}: top-1 {m['top1']:.3f}, KLD {m['kld_mean']:.2e}, "
                 f"max |dlogit| {m['max_abs_diff']:.3g}"
                 + (f", routing agreement {routing['agreement']:.3f}" if "agreement" in routing else ""),
                 style="green" if status == "passed" else "red")
        return [dict(r, target=t.name) for r in results if not r["passed"]]

    def _after_evaluate(self, st: Stage, out: Output) -> list[dict]:
        """Parity, perplexity, multiple choice, golden set and speed through the artifact's runtime."""
        from llmbuild.stages import evaluate

        t, art = self._targets[st.target], self.artifacts[st.target]
        b = registry.backend(t.backend)
        results = evaluate.apply_gates(out.record, self._gates[t.name], self.bc.eval)
        status = "passed" if all(r["passed"] for r in results) else "failed"
        art.evaluation = {**{k: v for k, v in out.record.items() if k != "out_files"}, "status": status,
                          "gates": results, "runtime_version": tool_versions([b.runtime.dist])[b.runtime.dist]}
        self.say(f"[evaluate:{t.name}] {status}: {_eval_line(out.record)}",
                 style="green" if status == "passed" else "red")
        return [dict(r, target=t.name) for r in results if not r["passed"]]

    def _skipped(self, st: Stage) -> None:
        """A stage whose runtime is missing: the artifact is built but UNVERIFIED, never passed."""
        art = self.artifacts.get(st.target)
        if art is None:
            return
        if st.role == "verify":
            art.verification = {"status": "unverified", "reason": st.skip}
        elif st.role == "evaluate":
            art.evaluation = {"status": "skipped", "reason": st.skip}
        elif st.role == "client" and (art.verification or {}).get("status") != "unverified":
            b = registry.backend(art.backend)  # the runtime is there, its client is not
            art.client = {"status": "skipped", "client": b.client.dist, "reason": st.skip}


    def _after_client(self, st: Stage, out: Output) -> list[dict]:
        """Golden set, multiple choice and speed through the artifact's client and its own tokenizer."""
        from llmbuild.evaluation import clients

        t, art = self._targets[st.target], self.artifacts[st.target]
        results = clients.apply_gates(out.record, self._gates[t.name])
        status = "passed" if all(r["passed"] for r in results) else "failed"
        art.client = {**{k: v for k, v in out.record.items() if k != "out_files"}, "status": status, "gates": results}
        self.say(f"[client:{t.name}] {status}: {out.record['client']} {clients.describe(out.record)}",
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


def _open_cache(bc: BuildConfig, readonly: bool) -> Cache:
    outputs = Path(bc.build.outputs_dir)
    cache_key = "build.cache_dir" if bc.build.cache_dir else "build.outputs_dir"
    # a dry run writes nothing, so it also plans on a read-only cache
    cache = Cache(Path(bc.build.cache_dir) if bc.build.cache_dir else outputs / ".cache", config_key=cache_key,
                  readonly=readonly)
    from llmbuild.targets import source_tokenizer

    # what transformers computes of a tokenizer, remembered by the files' content: plan-time checks of an
    # unchanged rebuild then load no tokenizer (0.85 s of transformers' import in a process without torch)
    source_tokenizer.remember_in(cache.root / "tokenizers", write=not readonly)
    from llmbuild.evaluation import harness

    # lm-eval tasks that passed the plan checks, by every input their load read: an unchanged rebuild
    # then imports no lm-eval and reads no document (0.8 s of the demo's rebuild)
    harness.remember_in(cache.root / "harness", write=not readonly, digest=cache.stat_cache.digest)
    return cache


def dry_run(bc: BuildConfig, ui: UI | None = None) -> Build:
    """Walk the plan without building (see the module docstring); the Build holds one row per stage."""
    import tempfile

    ui = ui or UI()
    b = None
    with tempfile.TemporaryDirectory(prefix="llmbuild-dry-run-") as tmp:  # the license reports go here
        b = Build(dataclasses.replace(bc, build=dataclasses.replace(bc.build, dry_run=True)),
                  _open_cache(bc, readonly=True), ui, Path(tmp))
        b.run()
    return b


def run_build(bc: BuildConfig, outcome: dict | None = None) -> int:
    """Build; `outcome`, when given, receives the build folder as soon as it exists (for sweep summaries)."""
    from llmbuild.report import document

    ui = UI()
    if bc.build.dry_run:
        from llmbuild import dry_run as shown

        b = dry_run(bc, ui)
        for line in shown.lines(b):
            ui.say(line)
        return 0
    outputs = Path(bc.build.outputs_dir)
    _check_writable(outputs / bc.recipe, "build.outputs_dir")
    cache = _open_cache(bc, readonly=False)
    started = time.time()
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
