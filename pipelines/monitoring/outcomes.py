"""Publish ground truth (outcome events) to a model's ``outcome_topic``, as the ERP services would.

    python -m pipelines.monitoring.outcomes credit_risk --request-id req-42 --actual true [--row 0]
    python -m pipelines.monitoring.outcomes stock_demand --file outcomes.csv   # columns: request_id, actual[, row]

The event format is documented in :mod:`pipelines.monitoring.live_accuracy`; events are keyed by
``event_id`` like every other event of the platform.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from feature_specs import load_spec, spec_names
from pipelines.monitoring.live_accuracy import outcome_event, parse_outcome
from pipelines.settings import Settings, get_settings
from pipelines.streaming.publish import publish_events
from pipelines.streaming.topics import ensure_topics, named


def publish_outcomes(model: str, outcomes: Iterable[dict[str, Any]], settings: Settings | None = None) -> int:
    """Check and send outcome events for ``model``; returns how many were delivered."""
    settings = settings or get_settings()
    spec = load_spec(model)
    events = list(outcomes)
    for event in events:
        parse_outcome(json.dumps(event), spec)  # refuse a malformed event before anything is sent
    return publish_events(model, events, settings, topic=named(spec.outcome_topic, settings))


def file_outcomes(model: str, path: Path) -> list[dict[str, Any]]:
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    classifier = load_spec(model).is_classifier
    return [
        outcome_event(
            model,
            str(row["request_id"]),
            bool(row["actual"]) if classifier else float(row["actual"]),
            row=int(row.get("row", 0) or 0),
        )
        for row in frame.to_dict("records")
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.monitoring.outcomes", description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=spec_names())
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--request-id", help="the scoring request the outcome belongs to")
    source.add_argument("--file", type=Path, help=".csv or .parquet with request_id, actual[, row]")
    parser.add_argument("--actual", help="true/false (classifiers) or a number (regression)")
    parser.add_argument("--row", type=int, default=0, help="row of the outcome in a batch request (default 0)")
    args = parser.parse_args(argv)
    if args.request_id and args.actual is None:
        parser.error("--request-id needs --actual")
    settings = get_settings()
    ensure_topics(settings, [args.model])
    if args.file:
        events = file_outcomes(args.model, args.file)
    else:
        events = [outcome_event(args.model, args.request_id, yaml.safe_load(args.actual), row=args.row)]
    try:
        sent = publish_outcomes(args.model, events, settings)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"sent {sent} outcome(s) to {named(load_spec(args.model).outcome_topic, settings)}")


if __name__ == "__main__":
    main()
