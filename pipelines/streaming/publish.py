"""Send events to a model's source topic, as the ERP services would.

    python -m pipelines.streaming.publish credit_risk --rows 5000          # synthetic events (seeded)
    python -m pipelines.streaming.publish credit_risk --file rows.parquet  # or .csv; one event per row
    python -m pipelines.streaming.publish credit_risk --rows 5000 --replay 3f2a9c1e  # that run again
    python -m pipelines.streaming.publish credit_risk --retrain "drift on avg_days_to_pay"

Events are JSON, keyed by ``event_id`` (a re-sent event lands on the same partition). **Every run
publishes new events:** a run gets a fresh run id, and the events it makes up carry it
(``<run>-s<seed>-<row>``), so publishing "300 rows" twice lands 600. ``--replay RUN`` re-sends the
events of run ``RUN`` on purpose (the same ids and, with the same ``--rows``/``--seed`` or file, the
same values: the trigger skips them as duplicates). Rows from a file keep their own ``event_id``;
rows without one get an id of the run, and rows without ``occurred_at`` the current time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from kafka import KafkaProducer

from feature_specs import load_spec, spec_names
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings, get_settings
from pipelines.streaming.topics import RETRAIN_REQUESTS, ensure_topics, named


def producer(settings: Settings) -> KafkaProducer:
    """A producer tuned for throughput: batches up to 1 MiB after 20 ms, lz4 (kafka-python decodes it
    in a fraction of gzip's time: the trigger reads any codec, this one costs it least)."""
    return KafkaProducer(
        **settings.kafka_options(),
        linger_ms=20,
        batch_size=1 << 20,
        compression_type="lz4",
        metrics_enabled=False,
        bootstrap_timeout_ms=10_000,
    )


def publish_events(
    model: str, events: Iterable[dict[str, Any]], settings: Settings | None = None, topic: str | None = None
) -> int:
    """Send events to the model's source topic (or ``topic``); returns how many were delivered."""
    settings = settings or get_settings()
    topic = topic or named(load_spec(model).source_topic, settings)
    out = producer(settings)
    try:
        futures = [
            out.send(topic, key=str(e.get("event_id", "")).encode(), value=json.dumps(e).encode()) for e in events
        ]
        out.flush(timeout=120)
        failed = [f.exception for f in futures if f.failed()]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(futures)} events were not delivered: {failed[0]}")
        return len(futures)
    finally:
        out.close(timeout=10)


def request_retrain(model: str, reason: str, settings: Settings | None = None, request_id: str | None = None) -> str:
    """Ask the trigger to retrain ``model``; returns the request id."""
    settings = settings or get_settings()
    request_id = request_id or str(uuid.uuid4())
    body = {"model": model, "reason": reason, "request_id": request_id}
    out = producer(settings)
    try:
        out.send(named(RETRAIN_REQUESTS, settings), key=model.encode(), value=json.dumps(body).encode()).get(30)
    finally:
        out.close(timeout=10)
    return request_id


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def run_event_id(run: str, seed: int, row: int) -> str:
    """The id of row ``row`` of a publishing run: new per run, the same when the run is replayed."""
    return f"{run}-s{seed}-{row}"


def synthetic_events(model: str, rows: int, seed: int, run: str) -> list[dict[str, Any]]:
    """``rows`` synthetic events of ``model`` (values from ``seed``) with ids of run ``run``."""
    events = to_events(generate(model, rows, seed=seed), seed=seed)
    for row, event in enumerate(events):
        event["event_id"] = run_event_id(run, seed, row)
    return events


def file_events(path: Path, run: str | None = None) -> list[dict[str, Any]]:
    """One event per row of a CSV or Parquet file; NaN becomes null. A row without ``event_id``
    gets one of run ``run`` (a fresh run when None)."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    now = datetime.now(UTC).isoformat()
    run = run or new_run_id()
    events = []
    for row, record in enumerate(frame.to_dict("records")):
        event = {k: None if isinstance(v, float) and math.isnan(v) else _plain(v) for k, v in record.items()}
        event.setdefault("event_id", run_event_id(run, 0, row))
        event.setdefault("occurred_at", now)
        events.append(event)
    return events


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.streaming.publish", description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=spec_names())
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--rows", type=int, default=1000, help="synthetic events to send (default 1000)")
    source.add_argument("--file", type=Path, help="send the rows of a .csv or .parquet file instead")
    source.add_argument("--retrain", metavar="REASON", help="send a retrain request instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic events' values")
    parser.add_argument(
        "--replay",
        metavar="RUN",
        help="re-send the events of an earlier run (its ids: duplicates the trigger skips); default: a new run",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_spec(args.model)  # a malformed spec: its one line, before anything is sent
    settings = get_settings()
    ensure_topics(settings)
    if args.retrain:
        request_id = request_retrain(args.model, args.retrain, settings)
        print(f"sent retrain request {request_id} for {args.model} to {named(RETRAIN_REQUESTS, settings)}")
        return
    run = args.replay or new_run_id()
    events = file_events(args.file, run) if args.file else synthetic_events(args.model, args.rows, args.seed, run)
    start = time.perf_counter()
    sent = publish_events(args.model, events, settings)
    elapsed = time.perf_counter() - start
    topic = named(load_spec(args.model).source_topic, settings)
    print(
        f"sent {sent} {args.model} events ({'file ' + str(args.file) if args.file else f'synthetic, seed {args.seed}'})"
        f" to {topic} at {settings.kafka_bootstrap} in {elapsed:.1f}s ({sent / elapsed:,.0f}/s);"
        f" {'replayed' if args.replay else 'new'} run {run} (send it again with --replay {run})"
    )


if __name__ == "__main__":
    main()
