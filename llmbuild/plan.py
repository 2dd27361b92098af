"""Plan: the build's stages as data, and every check that can be made before any work.

`make_plan(bc)` first runs the checks the recipe alone allows (the schema and each backend's
`check_options` already ran when the recipe was typed, config.typed_config; here: the model source and
its tokenizer inputs, the fine-tuning settings and files, the evaluation files and harness tasks, the
contamination and license settings, and for an `init` model the family each target must map). Then it
returns the stages, in the order they run, as declarations (llmbuild/declaration.py):

    acquire, license, [finetune], reference, [evalref, [contamination]], then per target
    export:T, verify:T, [evaluate:T, [client:T]]

Each declares the recipe subtree, the upstream outputs and the files its cache key is made of, the
tools whose versions enter it, and the function that runs it. The engine runs exactly these stages in
this order and keys each with `declaration.stage_key`; a dry run prints the same list, so the two
cannot disagree.

Model checks (`check_model`) run right after acquisition, which is a cache hit or a header read: the
family's config keys and rope kind, each target's support for the family, each backend's model checks
(tokenizer, shapes, context), the fine-tuning settings that depend on the model (context, LoRA modules,
layers), and the context every artifact is verified within. Both kinds fail with exit 2 before the
license gate, the reference model or any export spends time, and write nothing to the cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from llmbuild import targets as registry
from llmbuild.config import BuildConfig
from llmbuild.declaration import File, Ref, Stage
from llmbuild.errors import InvalidInput
from llmbuild.finetune.config import METHODS as FINETUNE_METHODS
from llmbuild.plain import plain

# bump a stage's version when its outputs change meaning for the same inputs: its old entries are then
# never looked up (verify 2, evaluate 2: quantized HF-layout checkpoints are read by ModelOpt's modules and
# answer golden sets; evalref 2: evalref.json holds the settings the artifact side reads, so their keys
# follow them; client 1: golden set, multiple choice and speed through each artifact's client and its own
# tokenizer; reference 2, verify 3: a mixture of experts' routing is recorded and compared, issue 11)
STAGE_VERSIONS = {"acquire": 1, "license": 1, "finetune": 1, "reference": 2, "export": 1, "verify": 3,
                  "evalref": 2, "evaluate": 2, "contamination": 1, "client": 1}


@dataclass
class Plan:
    """The stages of one build in run order, and what the document step writes after them."""

    stages: list[Stage]
    model_stage: str  # the stage whose model every target is built from: acquire, or finetune
    documents: list[str] = field(default_factory=list)  # files every build writes into its folder

    def __iter__(self):
        return iter(self.stages)

    def __len__(self):
        return len(self.stages)

    def __getitem__(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def names(self) -> list[str]:
        return [s.name for s in self.stages]


@dataclass
class ModelCheck:
    """What the model checks found: warnings to print, and the context the artifacts are verified in."""

    warnings: list[str] = field(default_factory=list)
    context: int | None = None  # the shortest context any artifact declares (None: the model states none)
    context_reasons: dict[str, str] = field(default_factory=dict)  # target key -> why its context is shorter
    shortest: str | None = None  # the target key declaring `context`, when an artifact set it


def default_model_name(bc: BuildConfig) -> str:
    if bc.build.model_name:
        return bc.build.model_name
    m = bc.model
    if m.source.value == "hub":
        return m.repo_id.split("/")[-1]
    if m.source.value == "local":
        return Path(m.path).resolve().name
    return f"{bc.recipe}-{m.architecture}"


def make_plan(bc: BuildConfig) -> Plan:
    """The recipe-only checks, then the stages (see the module docstring)."""
    from llmbuild.evaluation import contamination
    from llmbuild.stages import evaluate

    check_recipe(bc)
    e, ft = bc.eval, bc.finetune
    stages = [_acquire(bc), _license(bc)]
    model = "acquire"
    if ft.method != "none":
        stages.append(_finetune(bc))
        model = "finetune"
    stages.append(_reference(bc, model))
    evaluating = evaluate.enabled(e)
    if evaluating:
        stages.append(_evalref(bc, model))
        if contamination.enabled(e, ft):
            stages.append(_contamination(bc))
    for t in bc.targets:
        stages += _target(bc, t, model, evaluating)
    docs = ["README.md", "LICENSE_REPORT.md", "license_report.json", "manifest.json", "build.log"]
    docs += ["eval.json"] if evaluating else []
    docs += ["loss.png", "adapter/"] if ft.method == "lora" else ["loss.png"] if ft.method != "none" else []
    return Plan(stages, model, docs)


# -- the checks the recipe alone allows ---------------------------------------------------------------
def check_recipe(bc: BuildConfig) -> None:
    """Every check that needs only the recipe and the files it names: exit 2 before any stage runs."""
    from llmbuild.finetune import stage as ft
    from llmbuild.licenses.config import validate as validate_license
    from llmbuild.stages import acquire, evaluate

    m = bc.model
    if m.source.value == "hub":
        acquire.check_repo_id(m.repo_id)  # `owner/name`, before anything asks the Hub
    if m.source.value == "local":
        acquire.check_local_path(m.path)
    if bc.finetune.method not in FINETUNE_METHODS:
        raise InvalidInput(f"finetune.method: unknown method {bc.finetune.method!r}; "
                           f"known: {', '.join(FINETUNE_METHODS)}")
    if bc.eval.max_tokens < 2:
        raise InvalidInput("eval.max_tokens: must be at least 2")
    if not bc.eval.probes:
        raise InvalidInput("eval.probes: at least one probe prompt is needed to verify the artifacts")
    if m.source.value == "init":
        from llmbuild.archs import arch_class

        cls = arch_class(m.architecture, "model.architecture")
        check_family(cls, m.architecture, bc)
        cls.check_recipe_config(dict(m.config or {}), "model.config")
    ft.check(bc.finetune)  # data files, licenses and ranges; what depends on the model comes after acquisition
    validate_license(bc.license)  # a waiver without a reason, a bad fact value: exit 2 before acquisition
    evaluate.check(bc.eval)  # evaluation files in the wrong format: exit 2 naming file and line


def check_family(cls, name: str, bc: BuildConfig) -> None:
    """Every target's backend maps the family and can apply its options to it (check_family), or exit 2
    naming the target and the backends that do."""
    for t in bc.targets:
        if t.backend not in cls.targets:
            raise InvalidInput(f"{t.key}.backend: {name} is not supported by the {t.backend} backend; backends that "
                               f"support it: {', '.join(b for b in registry.names() if b in cls.targets)}")
        registry.backend(t.backend).check_family(t.options, cls, t.key)


def check_model(bc: BuildConfig, arch, model_dir: Path) -> ModelCheck:
    """Model checks per target (see the module docstring); returns warnings and the verified context."""
    from llmbuild.stages import evaluate

    check_family(type(arch), arch.name, bc)
    arch.check_checkpoint(model_dir)  # tensor names against config.json (experts, routers): a header read
    out = ModelCheck(context=arch.context)
    for t in bc.targets:
        b = registry.backend(t.backend)
        b.check_model(t.options, arch, model_dir, t.key)
        ctx, why = b.context_length(t.options, arch)
        if ctx and (out.context is None or ctx < out.context):
            out.context, out.shortest = ctx, t.key
        if why:
            out.context_reasons[t.key] = why
        if not b.runtime_available():
            out.warnings.append(f"{t.key}: {b.runtime.dist} is not installed, so this artifact will be built but "
                                f"marked UNVERIFIED ({b.runtime.install})")
    short = out.shortest
    if short in out.context_reasons:
        # every artifact is verified within the shortest context an artifact declares
        e, why = bc.eval, f"{out.context}-token context {short} declares ({out.context_reasons[short]})"
        if e.max_tokens > out.context:
            raise InvalidInput(f"eval.max_tokens: {e.max_tokens} tokens per probe is beyond the {why}; lower it")
        if evaluate.enabled(e) and e.window > out.context:
            raise InvalidInput(f"eval.window: {e.window} tokens is beyond the {why}; lower it or set 0")
    if bc.finetune.method != "none":
        from llmbuild.finetune import stage as ft

        ft.check_model(bc.finetune, arch.config)  # its context, LoRA modules and layers
    return out


# -- the stages -----------------------------------------------------------------------------------------
# Each run function gets the engine's StageContext (llmbuild/engine.py: the upstream outputs by name, this
# stage's key, the stat cache, progress) and the output folder, and returns the stage's record.

def _acquire(bc: BuildConfig) -> Stage:
    from llmbuild.stages import acquire

    m = bc.model
    version = STAGE_VERSIONS["acquire"]
    if m.source.value == "init":
        return Stage("acquire", "acquire", version, {"init": acquire.init_key_config(m, File), "dtype": m.dtype.value},
                     tools=acquire.INIT_TOOLS, run=lambda ctx, out: acquire.run_init(m, out, ctx.stat_cache),
                     summary=f"a new {m.architecture} from seed {m.seed}")
    # a checkpoint folder or Hub snapshot is checked and hashed by every build (the stat cache makes an
    # unchanged one a few stat calls), so it has no cache entry of its own: its digest keys what follows
    settings = {"allow_pickle": m.allow_pickle, "trust_remote_code": m.trust_remote_code}
    if m.source.value == "local":
        path = acquire.check_local_path(m.path)
        return Stage("acquire", "acquire", version, {"source": "local", "path": str(path), **settings},
                     tools=acquire.LOCAL_TOOLS, cached=False,
                     run=lambda ctx, out: acquire.acquire_local(str(path), m.allow_pickle, ctx.stat_cache,
                                                                m.trust_remote_code, ctx.warnings),
                     summary=f"the checkpoint in {path}, checked and hashed")
    return Stage("acquire", "acquire", version, {"source": "hub", "repo_id": m.repo_id, "revision": m.revision,
                                                 **settings},
                 tools=acquire.HUB_TOOLS, cached=False,
                 run=lambda ctx, out: acquire.acquire_hub(m.repo_id, m.revision, m.allow_pickle, ctx.stat_cache,
                                                          m.trust_remote_code, ctx.warnings, local_only=ctx.dry),
                 summary=f"{m.repo_id}@{m.revision} from the Hub, checked and hashed")


def _license(bc: BuildConfig) -> Stage:
    from llmbuild import licenses

    m, ft = bc.model, bc.finetune
    facts = licenses.BuildFacts(
        model_name=default_model_name(bc),
        base_model=m.repo_id if m.source.value == "hub" else (Path(m.path).name if m.source.value == "local" else None),
        source=m.source.value,
        finetune=ft.method,
        targets={t.name: {"backend": t.backend, "precision": registry.backend(t.backend).precision(t.options),
                          "quantized": registry.backend(t.backend).quantized(t.options)} for t in bc.targets},
    )
    lic = bc.license
    if ft.method != "none":
        from llmbuild.finetune.stage import dataset_licenses
        from llmbuild.licenses.config import DatasetLicense

        # the fine-tuning data's licenses are judged by the policy like the model's own
        lic = dataclasses.replace(lic, training_data=[
            *lic.training_data, *(DatasetLicense(name=d["path"], license=d["license"])
                                  for d in dataset_licenses(ft))])
    upstream = m.source.value != "init"  # the checkpoint's own LICENSE, README front matter, NOTICE
    inputs = {"policy": plain(lic), "facts": plain(facts), **({"model": Ref("acquire", "model")} if upstream else {})}

    def run(ctx, out):
        model_dir = ctx.value("acquire", "model_dir") if upstream else None
        decision = licenses.evaluate(lic, model_dir, facts)
        licenses.write_reports(decision, ctx.build_dir)
        return {"verdict": decision.verdict, "decision": decision,
                "files": licenses.artifact_files(decision, model_dir)}

    return Stage("license", "license", STAGE_VERSIONS["license"], inputs, cached=False, run=run,
                 summary=f"{bc.license.id or 'the license the checkpoint states'} against policy "
                         f"{bc.license.policy.name}")


def _finetune(bc: BuildConfig) -> Stage:
    from llmbuild.finetune import stage as ft

    cfg = bc.finetune

    def run(ctx, out):
        # checkpoints for resuming live beside the cache, keyed like the stage: a killed run resumes, and
        # nothing there is ever mistaken for a finished model
        work = ctx.cache_root / "work" / "finetune" / ctx.key
        with ctx.progress("finetune") as cb:
            def progress(step, total, loss, left):
                cb(step, total, f"loss {loss:.3f}, {left:.0f} s left")

            return ft.run(ctx.value("acquire", "model_dir"), cfg, out, work, progress)

    return Stage("finetune", "finetune", STAGE_VERSIONS["finetune"],
                 {"model": Ref("acquire", "model"), **ft.key_inputs(cfg, File)}, tools=ft.tools(cfg), run=run,
                 summary=f"{cfg.method} on {len(cfg.datasets)} dataset(s), then merged")


def _reference(bc: BuildConfig, model: str) -> Stage:
    from llmbuild.stages import reference

    e, m = bc.eval, bc.model
    return Stage("reference", "reference", STAGE_VERSIONS["reference"],
                 {"model": Ref(model, "model"), "probes": list(e.probes), "max_tokens": e.max_tokens,
                  "dtype": m.dtype.value}, tools=reference.TOOLS,
                 run=lambda ctx, out: reference.run(ctx.value(model, "model_dir"), list(e.probes), e.max_tokens,
                                                    m.dtype.value, m.trust_remote_code, out),
                 summary=f"the source's logits on {len(e.probes)} probe prompts (torch)")


def _evalref(bc: BuildConfig, model: str) -> Stage:
    """The source side of the evaluate stage (token ids, source logits and figures), once per build."""
    from llmbuild.stages import evaluate

    e, m = bc.eval, bc.model
    return Stage("evalref", "evalref", STAGE_VERSIONS["evalref"],
                 # context: only when an artifact declares a shorter one than the model (the windows fit in it)
                 {"model": Ref(model, "model"), "dtype": m.dtype.value, "eval": evaluate.key_parts(e, File),
                  "context": Ref("acquire", "shorter_context", optional=True)}, tools=evaluate.TOOLS,
                 run=lambda ctx, out: evaluate.prepare(ctx.value(model, "model_dir"), e, m.dtype.value,
                                                       m.trust_remote_code, out,
                                                       context=ctx.value("acquire", "context")),
                 summary="the source's evaluation figures (torch)")


def _contamination(bc: BuildConfig) -> Stage:
    from llmbuild.evaluation import contamination as ct

    e, ft = bc.eval, bc.finetune
    return Stage("contamination", "contamination", STAGE_VERSIONS["contamination"], ct.key_parts(e, ft, File),
                 tools=ct.TOOLS, run=lambda ctx, out: ct.run(e, ft, out),
                 summary=f"{e.contamination.n}-gram overlap of the fine-tuning data with every evaluation set")


def _target(bc: BuildConfig, t, model: str, evaluating: bool) -> list[Stage]:
    """export, verify, evaluate and client of one target."""
    from llmbuild.declaration import tool_versions
    from llmbuild.evaluation import clients
    from llmbuild.stages import evaluate, verify

    b = registry.backend(t.backend)
    e, m = bc.eval, bc.model
    options = plain(t.options)
    options.pop("gates")  # gates are applied to the records afterwards: changing one reruns nothing
    for opt in b.path_options:  # a calibration text by content: moving the checkout rebuilds nothing
        if options.get(opt) and _is_file(options[opt]):
            options[opt] = File(options[opt])
    export = f"export:{t.name}"
    runtime = b.runtime.dist
    skip = None if b.runtime_available() else f"{runtime} is not installed"

    def run_export(ctx, out):
        from llmbuild.checkpoint import open_checkpoint

        ckpt = open_checkpoint(ctx.value(model, "model_dir"), allow_pickle=m.allow_pickle)
        with ctx.progress(export) as cb:
            return b.export(ckpt, t.options, out, ctx.value("license", "meta"), cb)

    def run_verify(ctx, out):
        exp = ctx.output(export)
        return verify.run(b, exp.dir, exp.record, ctx.output("reference").dir / "reference.npz", e.kv_check)

    def run_evaluate(ctx, out):
        exp, eref = ctx.output(export), ctx.output("evalref")
        return evaluate.run(b, t.backend, exp.dir, exp.record, eref.dir, eref.record, ctx.value(model, "model_dir"),
                            e, m.trust_remote_code)

    files = b.planned_files(t.options, default_model_name(bc))
    version = tool_versions([runtime])[runtime]
    made = (f"{', '.join(files)}; " if files else "") + f"{b.precision(t.options)}, verified by {runtime}" + (
        f" {version}" if version != "absent" else " (not installed: UNVERIFIED)")
    stages = [
        Stage(export, f"export-{t.backend}", STAGE_VERSIONS["export"],
              {"model": Ref(model, "model"), "backend": b.name, "options": options, "meta": Ref("license", "meta"),
               "extra": b.key_extra(t.options)}, tools=b.tools, run=run_export, target=t.name, summary=made),
        # the loader too: the same bytes read by another loader is another verification
        Stage(f"verify:{t.name}", f"verify-{t.backend}", STAGE_VERSIONS["verify"],
              {"artifact": Ref(export), "reference": Ref("reference"), "kv_check": e.kv_check, "backend": b.name,
               "loader": Ref(export, "loader")}, tools=(runtime, "numpy"), run=run_verify, target=t.name, skip=skip,
              summary=f"parity with the source on the probe prompts, through {runtime}"),
    ]
    if evaluating:
        stages.append(Stage(
            f"evaluate:{t.name}", f"evaluate-{t.backend}", STAGE_VERSIONS["evaluate"],
            {"artifact": Ref(export), "evalref": Ref("evalref"), "model": Ref(model, "model"), "backend": b.name,
             "threads": e.threads, "loader": Ref(export, "loader")}, tools=(runtime, *evaluate.TOOLS),
            run=run_evaluate, target=t.name, skip=skip, summary=f"the evaluation sets through {runtime}"))
    if evaluating and b.client is not None and clients.enabled(e):
        def run_client(ctx, out):
            exp, eref = ctx.output(export), ctx.output("evalref")
            # the evaluate stage's speed only for the ratio beside the client's own (a timing, so not keyed:
            # read around StageContext.output, which admits declared upstreams only)
            ev = ctx.outputs.get(f"evaluate:{t.name}")
            return clients.run(b, exp.dir, exp.record, eref.dir, eref.record, ctx.value(model, "model_dir"), e,
                               m.trust_remote_code, ev.record if ev else {})

        client_skip = skip or (None if b.client_available() else
                               f"{b.client.dist} is not installed: {b.client.install}")
        stages.append(Stage(
            f"client:{t.name}", f"client-{t.backend}", STAGE_VERSIONS["client"],
            {"artifact": Ref(export), "evalref": Ref("evalref"), "model": Ref(model, "model"), "backend": b.name,
             "settings": clients.key_parts(b, e), "loader": Ref(export, "loader")},
            tools=(b.client.dist, runtime, "transformers", "tokenizers"), run=run_client, target=t.name,
            skip=client_skip, summary=f"the golden set, tasks and speed through {b.client.dist} and its own tokenizer"))
    return stages


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # a name the OS cannot hold names no file
        return False
