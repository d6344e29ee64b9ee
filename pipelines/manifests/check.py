"""Build every kustomize overlay and check what it renders before a cluster sees it.

* InferenceServices: the KServe CRD's own ``openAPIV3Schema`` (manifests/schemas), closed so
  that an unknown field is an error (the API server would silently prune it); see
  :mod:`pipelines.manifests.schemas`.
* Kinds Kubernetes ships (Deployment, Service, RBAC, NetworkPolicy, ...): the Kubernetes JSON
  schemas of ``kubernetes-validate``, strict.
* Other custom resources (Strimzi ``KafkaTopic``): no schema here, so apiVersion, kind and
  metadata are checked only — and the report says so.
* Lint rules for what the schemas allow but the platform must not do (:mod:`pipelines.manifests.lint`).
* Every discovered spec has its InferenceService and KafkaTopics
  (:mod:`pipelines.manifests.coverage`), and the committed manifests are what ``make manifests``
  renders from the specs (``render --check``).

Usage: ``python -m pipelines.manifests.check [OVERLAY_DIR ...]`` (default: every overlay).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from pipelines.kustomize import build, find_kustomize
from pipelines.manifests.findings import Finding, Resource
from pipelines.manifests.lint import lint
from pipelines.manifests.schemas import sanity, schema_findings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"


def check_bundle(resources: list[Resource]) -> tuple[list[Finding], list[str]]:
    """All findings for one rendered bundle, and notes on what could only be sanity-checked."""
    findings: list[Finding] = []
    notes: set[str] = set()
    for res in resources:
        findings += sanity(res)
        errors, note = schema_findings(copy.deepcopy(res))
        findings += errors
        if note:
            notes.add(note)
    findings += lint(resources)
    return findings, sorted(notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.manifests.check", description=__doc__.split("\n")[0])
    parser.add_argument("overlays", nargs="*", type=Path, help="overlay directories (default: all)")
    args = parser.parse_args(argv)
    overlays = args.overlays or sorted(p for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
    kustomize = find_kustomize()
    if not kustomize:
        print("kustomize not found: `make kustomize` installs the pinned one (or set KUSTOMIZE)", file=sys.stderr)
        return 2
    from feature_specs import load_specs
    from pipelines.manifests import render
    from pipelines.manifests.coverage import coverage

    specs = load_specs()
    manifests = args.overlays[0].resolve().parents[1] if args.overlays else MANIFESTS
    stale = render.stale(manifests, specs)
    print(f"{'FAIL' if stale else 'ok':4} rendered from the specs: {len(stale)} stale files")
    for problem in stale:
        print(f"     {problem}: run `make manifests`")
    failed = bool(stale)
    for overlay in overlays:
        try:
            resources = build(overlay, kustomize)
        except RuntimeError as e:
            print(f"FAIL {overlay}: {e}", file=sys.stderr)
            failed = True
            continue
        findings, notes = check_bundle(resources)
        findings += coverage(resources, specs)
        status = "FAIL" if findings else "ok"
        print(f"{status:4} {overlay.name}: {len(resources)} resources, {len(findings)} findings")
        for finding in findings:
            print(f"     {finding}")
        for note in notes:
            print(f"     note: {note}")
        failed |= bool(findings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
