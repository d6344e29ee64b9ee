"""validate: a great-expectations suite generated from the feature spec, run on the snapshot.

great_expectations is imported inside the functions only: the import alone takes seconds.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from feature_specs.spec import FeatureSpec

log = logging.getLogger(__name__)

#: columns every landed row carries besides features and target.
META_COLUMNS = ("event_id", "occurred_at")
#: columns a landed row may carry.
OPTIONAL_COLUMNS = ("landed_at",)
#: an optional feature may be missing in at most this share of rows.
MAX_NULL_SHARE = 0.5
_FLOAT_TYPES = ["float64", "float32", "int64", "int32", "Float64", "Int64", "Int32"]
_TYPES: dict[str, list[str]] = {
    "float": _FLOAT_TYPES,
    "int": _FLOAT_TYPES,  # ints with missing values are stored as floats
    "bool": ["bool", "boolean", "object"],  # object: booleans with nulls
    "category": ["object", "str", "string", "category"],
}


class ValidationFailed(RuntimeError):
    """The snapshot broke the spec's expectations; the message lists every failure."""


@dataclass
class Report:
    success: bool
    failures: list[str] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)


def expectations(spec: FeatureSpec, columns: list[str]) -> list[Any]:
    """The spec as great-expectations expectations for a snapshot with ``columns``.

    The column set must match exactly: a PII field (or any column the spec does not know, which
    may be PII under another name) fails the suite.
    """
    import great_expectations.expectations as gxe

    allowed = [*META_COLUMNS, *spec.feature_names, spec.target.name]
    allowed += [c for c in OPTIONAL_COLUMNS if c in columns]
    out: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=spec.retrain.min_rows),
        gxe.ExpectTableColumnsToMatchSet(column_set=allowed, exact_match=True),
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
    ]
    for f in spec.features:
        out.append(gxe.ExpectColumnValuesToBeInTypeList(column=f.name, type_list=_TYPES[f.dtype]))
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=f.name, mostly=1 - MAX_NULL_SHARE if f.optional else 1.0))
        if f.dtype == "category" and not f.allow_unknown:
            out.append(gxe.ExpectColumnValuesToBeInSet(column=f.name, value_set=list(f.categories or ())))
        elif f.dtype == "bool":
            out.append(gxe.ExpectColumnValuesToBeInSet(column=f.name, value_set=[True, False]))
        elif f.min is not None or f.max is not None:
            out.append(gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.min, max_value=f.max))
    target = spec.target
    out.append(gxe.ExpectColumnValuesToNotBeNull(column=target.name))
    if target.dtype == "bool":
        out.append(gxe.ExpectColumnValuesToBeInSet(column=target.name, value_set=[True, False]))
    elif target.min is not None or target.max is not None:
        out.append(gxe.ExpectColumnValuesToBeBetween(column=target.name, min_value=target.min, max_value=target.max))
    return out


def _describe(result: Any) -> str:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "value_set", "type_list", "column_set")}
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    observed = result.result or {}
    detail = ""
    if "details" in observed:
        detail = f"{observed['details']}"
    elif "observed_value" in observed:
        detail = f"observed {observed['observed_value']}"
    elif "unexpected_count" in observed:
        examples = observed.get("partial_unexpected_list", [])[:3]
        detail = (
            f"{observed['unexpected_count']} unexpected ({observed.get('unexpected_percent', 0):.2f}%), e.g. {examples}"
        )
    return f"{config.type}({args}): {detail}".rstrip(": ")


def validate(spec: FeatureSpec, frame: pd.DataFrame, result_json: Path, docs_dir: Path | None = None) -> Report:
    """Run the suite on ``frame``; write the result JSON and, into ``docs_dir``, the Data Docs site."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas(name="landing")
        .add_dataframe_asset(name=spec.name)
        .add_batch_definition_whole_dataframe("snapshot")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=f"{spec.name}-{spec.version}"))
    for expectation in expectations(spec, list(frame.columns)):
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{spec.name}-snapshot", data=batch, suite=suite)
    )
    with tempfile.TemporaryDirectory() as site:
        actions: list[Any] = []
        if docs_dir is not None:
            context.add_data_docs_site(
                site_name="snapshot",
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": site},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
            actions.append(gx.checkpoint.UpdateDataDocsAction(name="data-docs", site_names=["snapshot"]))
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(name=spec.name, validation_definitions=[definition], actions=actions, result_format="SUMMARY")
        )
        result = next(iter(checkpoint.run(batch_parameters={"dataframe": frame}).run_results.values()))
        if docs_dir is not None:
            shutil.copytree(site, docs_dir, dirs_exist_ok=True)
    failures = [_describe(r) for r in result.results if not r.success]
    report = Report(bool(result.success), failures, dict(result.statistics))
    result_json.parent.mkdir(parents=True, exist_ok=True)
    result_json.write_text(json.dumps(result.to_json_dict(), indent=1, default=str))
    log.info("validate: %s expectations, %s failed", report.statistics.get("evaluated_expectations"), len(failures))
    return report


def raise_if_failed(report: Report, model: str) -> None:
    """Raise :class:`ValidationFailed` listing the failed expectations."""
    if not report.success:
        lines = "\n".join(f"  - {f}" for f in report.failures)
        raise ValidationFailed(f"snapshot of '{model}' failed {len(report.failures)} expectation(s):\n{lines}")
