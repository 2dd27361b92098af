"""Plan: the ordered stages of a build, and every check that can be made before heavy work.

Checks are split by what they need:
- recipe-only checks run before anything: the schema and each backend's `check_options` when the
  recipe is typed (config.typed_config), the rest here in `make_plan` (sources, evaluation files,
  license settings, and for an `init` model the family each target must map);
- model checks (`check_model`) run right after acquisition, which is a cache hit or a header read:
  the family's config keys and rope kind (when its config.json is bound to its architecture class),
  each target's support for the family, each backend's model checks (tokenizer, shapes, context),
  and the context every artifact is verified within. Both fail before the license gate, the
  reference model or any export spends time, and write nothing to the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmbuild import targets as registry
from llmbuild.config import BuildConfig
from llmbuild.errors import InvalidInput
from llmbuild.finetune.config import METHODS as FINETUNE_METHODS


@dataclass
class Step:
    name: str  # what the build prints: "acquire", "export:<target>"
    kind: str  # cache namespace
    target: str | None = None


@dataclass
class ModelCheck:
    """What the model checks found: warnings to print, and the context the artifacts are verified in."""

    warnings: list[str] = field(default_factory=list)
    context: int | None = None  # the shortest context any artifact declares (None: the model states none)
    context_reasons: dict[str, str] = field(default_factory=dict)  # target key -> why its context is shorter
    shortest: str | None = None  # the target key declaring `context`, when an artifact set it


def make_plan(bc: BuildConfig) -> list[Step]:
    m = bc.model
    if m.source.value == "hub" and not m.repo_id:
        raise InvalidInput("model.repo_id: required when model.source is hub")
    if m.source.value == "local" and not m.path:
        raise InvalidInput("model.path: required when model.source is local")
    if bc.finetune.method not in FINETUNE_METHODS:
        raise InvalidInput(f"finetune.method: unknown method {bc.finetune.method!r}; known: {', '.join(FINETUNE_METHODS)}")
    if bc.eval.max_tokens < 2:
        raise InvalidInput("eval.max_tokens: must be at least 2")
    if not bc.eval.probes:
        raise InvalidInput("eval.probes: at least one probe prompt is needed to verify the artifacts")
    if m.source.value == "init":
        from llmbuild.archs import arch_class

        cls = arch_class(m.architecture, "model.architecture")
        check_family(cls, m.architecture, bc)
        cls.check_recipe_config(dict(m.config or {}), "model.config")
    from llmbuild.licenses.config import validate as validate_license
    from llmbuild.stages import evaluate

    validate_license(bc.license)  # a waiver without a reason, a bad fact value: exit 2 before acquisition
    evaluate.check(bc.eval)  # evaluation files in the wrong format: exit 2 naming file and line
    evaluating = evaluate.enabled(bc.eval)
    steps = [Step("acquire", "acquire"), Step("license", "license")]
    if bc.finetune.method != "none":
        steps.append(Step("finetune", "finetune"))
    steps.append(Step("reference", "reference"))
    if evaluating:
        steps.append(Step("evalref", "evalref"))
        from llmbuild.evaluation import contamination

        if contamination.enabled(bc.eval, bc.finetune):
            steps.append(Step("contamination", "contamination"))
    for t in bc.targets:
        steps += [Step(f"export:{t.name}", f"export-{t.backend}", t.name),
                  Step(f"verify:{t.name}", f"verify-{t.backend}", t.name)]
        if evaluating:
            steps.append(Step(f"evaluate:{t.name}", f"evaluate-{t.backend}", t.name))
    steps.append(Step("document", "document"))
    return steps


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
    return out
