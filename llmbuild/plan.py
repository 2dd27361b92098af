"""Plan: the ordered stages of a build, and every check that can be made before heavy work.

Static checks (recipe only) run before anything; model checks (architecture support per target) run
right after acquisition, which is a cache hit or a header read, so both fail before the license gate,
the reference model or any export spends time.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmbuild import targets as registry
from llmbuild.config import BuildConfig
from llmbuild.errors import InvalidInput
from llmbuild.finetune.config import METHODS as FINETUNE_METHODS


@dataclass
class Step:
    name: str  # what the build prints: "acquire", "export:cpu-gguf"
    kind: str  # cache namespace
    target: str | None = None


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


def check_targets(bc: BuildConfig, hf_config: dict) -> list[str]:
    """Model-dependent checks per target; returns warnings (e.g. a runtime that is not installed)."""
    warnings = []
    for t in bc.targets:
        mod = registry.backend(t.backend)
        mod.check(t.options, hf_config, t.key)  # architecture first (check_architecture), then options
        if not mod.runtime_available():
            dist = mod.RUNTIME_DIST
            hint = "pip install 'llmbuild[llamacpp]'" if dist == "llama-cpp-python" else f"pip install {dist}"
            warnings.append(f"{t.key}: {dist} is not installed, so this artifact will be built but marked "
                            f"UNVERIFIED ({hint})")
    return warnings
