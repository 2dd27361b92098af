"""License compliance: every build knows what its license lets it do, proves it, and ships what it demands.

The engine calls, in order:
    decision = evaluate(cfg.license, model_dir, BuildFacts(...))   # InvalidInput (exit 2) on bad input
    files = artifact_files(decision, model_dir)                     # LICENSE, NOTICE, USE_POLICY.md bytes
    write_reports(decision, build_dir)                              # LICENSE_REPORT.md, license_report.json
    if decision.verdict == "fail": raise LicenseViolation(...)      # exit 3, before fine-tuning or export
and later card_fields / card_section (model card) and artifact_metadata (GGUF / ONNX metadata).

Modules: kb.py (the clause records in data/licenses.yaml), ids.py (ids, aliases, SPDX expressions),
detect.py (what a snapshot says), policy.py (clauses and verdicts), report.py (reports and shipped
files), config.py (the recipe's `license:` schema), cli.py (`llmbuild-license check`).
Importing this package is cheap: YAML and license-expression load on first use.
"""

from llmbuild.licenses.policy import BuildFacts, Decision, evaluate
from llmbuild.licenses.report import artifact_files, artifact_metadata, card_fields, card_section, write_reports

__all__ = [
           "BuildFacts",
           "Decision",
           "artifact_files",
           "artifact_metadata",
           "card_fields",
           "card_section",
           "evaluate",
           "write_reports",
]
