"""bom.cdx.json: the build's provenance as a CycloneDX 1.6 ML-BOM that other tools read (Dependency-Track,
cyclonedx-cli, OWASP's SBOM tooling), written with cyclonedx-python-lib and checked by its JSON schema
validator before it is saved.

What it holds, all from the typed result (never from the recipe's hopes):
- metadata: the build (a machine-learning-model component named after the model, the build id as its
  version), the time, and the tools with their versions (llmbuild and every library the stages ran);
- the source model: a machine-learning-model component with its Hub id and commit, or where it came
  from, its license and the digest of its files; for a fine-tuned build the base model and the merged
  model, the merged one `pedigree`-derived from the base;
- each fine-tuning dataset: a data component with its sha256, license and Hub id when given;
- each artifact: a machine-learning-model component (format, precision, backend) with every file as a
  nested file component carrying its sha256 and size, its license, and its verification verdict;
- dependencies: each artifact on the model it was built from, the model on its base and datasets.
The ML-BOM's modelCard object is not implemented by cyclonedx-python-lib (11.x), so the facts a model
card would hold are properties in the `llmbuild:` namespace, and README.md is the card.
"""

from __future__ import annotations

from pathlib import Path

from llmbuild import __version__
from llmbuild.result import BuildResult

FILE = "bom.cdx.json"


def _license(decision):
    """The build's license as a CycloneDX license: the SPDX id where the knowledge base has one, else the
    Hub id and name."""
    from cyclonedx.model import XsUri
    from cyclonedx.model.license import DisjunctiveLicense

    if decision is None:
        return []
    from llmbuild.licenses import kb as kb_mod

    out = []
    for key in getattr(decision, "licenses", []) or []:
        try:
            rec = kb_mod.load().get(key)
        except Exception:  # an unknown license allowed by the recipe (license.unknown: allow)
            rec = {"name": key}
        url = rec.get("url")
        if rec.get("spdx"):
            out.append(DisjunctiveLicense(id=rec["spdx"]))
        else:
            out.append(DisjunctiveLicense(name=rec.get("name") or key, url=XsUri(url) if url else None))
    return out


def _hashes(sha256: str | None):
    from cyclonedx.model import HashAlgorithm, HashType

    return [HashType(alg=HashAlgorithm.SHA_256, content=sha256)] if sha256 else []


def _props(**kv):
    from cyclonedx.model import Property

    return [Property(name=f"llmbuild:{k}", value=str(v)) for k, v in kv.items() if v is not None]


def _files(prefix: str, files: dict):
    from cyclonedx.model.component import Component, ComponentType

    return [Component(type=ComponentType.FILE, name=f"{prefix}{p}", bom_ref=f"file:{prefix}{p}",
                      hashes=_hashes(meta.get("sha256")), properties=_props(size=meta.get("size")))
            for p, meta in sorted(files.items())]


def make(build: BuildResult):
    """The Bom object of a build."""
    from cyclonedx.model import ExternalReference, ExternalReferenceType, XsUri
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType, Pedigree
    from cyclonedx.model.tool import ToolRepository

    licenses = _license(build.license_decision)
    m = build.model
    rec = m.record if m else {}
    refs = []
    if build.repo_id:
        url = f"https://huggingface.co/{build.repo_id}" + (f"/tree/{rec['commit']}" if rec.get("commit") else "")
        refs.append(ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(url)))
    base = build.base_model or m
    source = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, name=build.repo_id or build.model_name, bom_ref="model:source",
        version=rec.get("commit") or (base.digest[:16] if base else None), licenses=licenses,
        external_references=refs, hashes=_hashes(base.digest if base else None),
        description=f"the {build.source} model the build started from",
        properties=_props(source=build.source, architecture=rec.get("architecture"),
                          parameters=rec.get("num_parameters"), digest="sha256 of the sorted file digests"))
    components = [source]
    dependencies = {}
    built_from = source
    if build.finetune:
        datasets = []
        specs = ((build.config or {}).get("finetune") or {}).get("datasets") or []
        for i, d in enumerate(build.finetune.get("datasets") or []):
            hub_id = specs[i].get("hub_id") if i < len(specs) and isinstance(specs[i], dict) else None
            ds = Component(type=ComponentType.DATA, name=hub_id or Path(d["path"]).name, bom_ref=f"data:{i}",
                           hashes=_hashes(d.get("sha256")), licenses=_license_id(d.get("license")),
                           external_references=[ExternalReference(type=ExternalReferenceType.DISTRIBUTION,
                                                                  url=XsUri(f"https://huggingface.co/datasets/{hub_id}"))]
                           if hub_id else [],
                           properties=_props(shape=d.get("shape"), records=d.get("records"), path=d.get("path")))
            datasets.append(ds)
        components += datasets
        merged = Component(
            type=ComponentType.MACHINE_LEARNING_MODEL, name=f"{build.model_name} (fine-tuned)", bom_ref="model:merged",
            version=m.digest[:16], hashes=_hashes(m.digest), licenses=licenses,
            pedigree=Pedigree(ancestors=[Component(type=ComponentType.MACHINE_LEARNING_MODEL, name=source.name,
                                                   version=source.version)]),
            properties=_props(method=build.finetune.get("method"), steps=build.finetune.get("steps"),
                              eval_loss_before=build.finetune.get("eval_loss_before"),
                              eval_loss_after=build.finetune.get("eval_loss_after")))
        components.append(merged)
        dependencies[merged] = [source, *datasets]
        built_from = merged
    for a in build.artifacts:
        if a.export is None:
            continue
        v = a.verification or {}
        art = Component(
            type=ComponentType.MACHINE_LEARNING_MODEL, name=f"{build.model_name} {a.target}", bom_ref=f"artifact:{a.target}",
            version=a.precision, licenses=licenses, components=_files(f"artifacts/{a.target}/", a.files),
            properties=_props(target=a.target, backend=a.backend, precision=a.precision, quantized=a.quantized,
                              verification=v.get("status", "not run"), runtime=v.get("runtime"),
                              runtime_version=v.get("runtime_version"),
                              kld_mean=(v.get("metrics") or {}).get("kld_mean"),
                              top1=(v.get("metrics") or {}).get("top1")))
        components.append(art)
        dependencies[art] = [built_from]
    tools = [Component(type=ComponentType.APPLICATION, name="llmbuild", version=__version__)]
    tools += [Component(type=ComponentType.LIBRARY, name=name, version=version)
              for name, version in sorted(build.tools.items()) if version and version != "absent"]
    meta = BomMetaData(
        tools=ToolRepository(components=tools),
        component=Component(type=ComponentType.MACHINE_LEARNING_MODEL, name=build.model_name, version=build.dir.name,
                            bom_ref="build", licenses=licenses,
                            properties=_props(recipe=build.recipe, status=build.status)),
        properties=_props(manifest="manifest.json", card="README.md"))
    bom = Bom(components=components, metadata=meta)
    for comp, deps in dependencies.items():
        bom.register_dependency(comp, deps)
    bom.register_dependency(meta.component, [c for c in components if str(c.bom_ref).startswith("artifact:")])
    return bom


def _license_id(spdx_or_name: str | None):
    from cyclonedx.model.license import DisjunctiveLicense

    if not spdx_or_name:
        return []
    try:
        from llmbuild.licenses.ids import spdx_licensing

        if not spdx_licensing().validate(spdx_or_name).errors:
            key = spdx_licensing().parse(spdx_or_name).render()
            return [DisjunctiveLicense(id=key)] if " " not in key else [DisjunctiveLicense(name=key)]
    except Exception:
        pass
    return [DisjunctiveLicense(name=spdx_or_name)]


def to_json(bom) -> str:
    from cyclonedx.output.json import JsonV1Dot6

    return JsonV1Dot6(bom).output_as_string(indent=2)


def write(build: BuildResult, d: Path) -> None:
    # held to CycloneDX 1.6's schema by the library's validator in the tests
    # (tests/clients/test_clients.py::test_bom_validates), not in every build: importing the validator
    # costs 2.5 s (jsonschema's format checkers), more than an unchanged rebuild is allowed in all
    (Path(d) / FILE).write_text(to_json(make(build)), encoding="utf-8")
