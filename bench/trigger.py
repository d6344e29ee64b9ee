"""Trigger throughput through a real broker: landed-and-committed events per second, per model.

    python -m bench.trigger --events 100000      # needs a broker: make kafka-up
    python -m bench.trigger --s3                 # folder vs the S3 server of make stores-up

For each model: publish ``--events`` synthetic events (``--bad-share`` of them invalid) to fresh
(prefixed) topics, then run the trigger (one process, one consumer) until they are all landed or
dead-lettered, and committed. The rate is events / (last commit - first batch): the steady state,
without the group join. Retraining
launches are recorded, not run: this measures intake. The landing store is a temporary folder;
with ``--s3`` each model runs again landing into a fresh ``s3://`` prefix (the object-store landing
log) and the ratio s3/local is printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from kafka import KafkaConsumer, TopicPartition

from feature_specs import load_spec, spec_names
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings, get_settings
from pipelines.streaming.landing import parts as landing_parts
from pipelines.streaming.publish import publish_events
from pipelines.streaming.topics import ensure_topics, named
from pipelines.streaming.trigger.loop import Trigger


class _TimedTrigger(Trigger):
    first: float | None = None
    last: float = 0.0

    def _submit(self, landing: Any, batch: Any) -> None:
        super()._submit(landing, batch)  # the first waits for the landing process to load
        self.first = self.first or time.perf_counter()

    def _settle(self, batch: Any, outcomes: Any, producer: Any) -> None:
        super()._settle(batch, outcomes, producer)
        self.last = time.perf_counter()  # the commit follows at once; `run` returns after it


def _lag(settings: Settings, topic: str) -> int:
    """Records of ``topic`` not yet committed by the trigger's group."""
    consumer = KafkaConsumer(**settings.kafka_options(), group_id=settings.trigger_group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = consumer.end_offsets(parts)
        return sum(ends[tp] - (consumer.committed(tp) or 0) for tp in parts)
    finally:
        consumer.close(autocommit=False)


def raw_consume_per_s(settings: Settings, topic: str, n: int) -> float:
    """Baseline, same broker and records: a bare consumer that only reads (no validation, no landing)."""
    consumer = KafkaConsumer(
        topic,
        **settings.kafka_options(),
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        check_crcs=True,  # as the trigger: in C with the crc32c package
        max_poll_records=settings.trigger_max_poll_records,
    )
    try:
        seen, first = 0, None
        while seen < n:
            batch = consumer.poll(timeout_ms=1000)
            if batch and first is None:
                first = time.perf_counter()
            seen += sum(len(records) for records in batch.values())
        return n / (time.perf_counter() - (first or time.perf_counter()))
    finally:
        consumer.close(autocommit=False)


def bench(
    model: str, n: int, base: Settings, bad_share: float = 0.0, s3: dict[str, str] | None = None
) -> dict[str, float]:
    """One run; ``s3``: the variables of ``stores.env`` to land into a fresh prefix of that S3 server."""
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, _aws(s3)):
        tag = uuid.uuid4().hex[:8]
        update: dict[str, Any] = {
            "kafka_topic_prefix": f"bench-{tag}.",
            "data_dir": Path(tmp),
            "trigger_group": "bench-trigger",
        }
        if s3:
            update |= {
                "landing_uri": f"s3://{s3['CONSTRUCTOS_STORES_BUCKET']}/bench/{tag}/landing",
                "s3_endpoint_url": s3["CONSTRUCTOS_S3_ENDPOINT_URL"],
            }
        settings = base.model_copy(update=update)
        ensure_topics(settings, [model])
        events = to_events(generate(model, n, seed=7))
        if bad_share:  # a wrong type in every k-th event: dead-lettered
            feature = load_spec(model).feature_names[1]
            for event in events[:: round(1 / bad_share)]:
                event[feature] = "n/a"
        start = time.perf_counter()
        publish_events(model, events, settings)
        published = time.perf_counter() - start
        trigger = _TimedTrigger(settings, [model], launcher=lambda model, key, **_: "not-run")
        start = time.perf_counter()
        trigger.run(exit_when_idle_s=2.0)
        landed = len(landing_parts.read_landed(settings.landing_store, model))
        handled = landed + trigger.stats["rejected"]
        lag = _lag(settings, named(load_spec(model).source_topic, settings))
        assert trigger.first is not None
        steady = trigger.last - trigger.first
        raw = raw_consume_per_s(settings, named(load_spec(model).source_topic, settings), n)
        return {
            "events": n,
            "landed": landed,
            "rejected": trigger.stats["rejected"],
            "uncommitted": lag,
            "publish_per_s": n / published,
            "trigger_per_s": handled / steady,
            "raw_consume_per_s": raw,
            "with_startup_s": trigger.last - start,
        }


def _aws(env: dict[str, str] | None) -> dict[str, str]:
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    return {k: env[k] for k in names if k in env} if env else {}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trigger", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per model (default 100000)")
    parser.add_argument("--models", default=",".join(spec_names()), help="comma-separated models")
    parser.add_argument("--bad-share", type=float, default=0.0, help="share of invalid events (default 0)")
    parser.add_argument("--s3", action="store_true", help="compare landing into a folder and into S3 (stores-up)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    settings = get_settings()
    if args.s3:
        compare_stores(args.models.split(","), args.events, settings)
        return
    print(
        f"{'model':<14}{'events':>8}{'landed':>8}{'rejected':>9}{'uncommitted':>12}"
        f"{'publish/s':>11}{'trigger/s':>11}{'raw read/s':>11}{'ratio':>7}{'wall s':>8}"
    )
    for model in args.models.split(","):
        r = bench(model, args.events, settings, args.bad_share)
        print(
            f"{model:<14}{r['events']:>8}{r['landed']:>8}{r['rejected']:>9}{r['uncommitted']:>12}"
            f"{r['publish_per_s']:>11,.0f}{r['trigger_per_s']:>11,.0f}{r['raw_consume_per_s']:>11,.0f}"
            f"{r['trigger_per_s'] / r['raw_consume_per_s']:>7.2f}{r['with_startup_s']:>8.1f}"
        )
    print("ratio = trigger (validate, land exactly once, commit; CRCs checked) / a bare consumer; target >= 40,000/s")


def compare_stores(models: list[str], events: int, settings: Settings) -> None:
    """Landing throughput into a folder next to the S3 server of ``make stores-up``, same events."""
    from bench.stores import stores_env

    s3 = stores_env()
    print(f"{'model':<14}{'events':>8}{'file:// /s':>12}{'s3:// /s':>12}{'s3/file':>9}  (trigger events/s)")
    for model in models:
        local, remote = bench(model, events, settings), bench(model, events, settings, s3=s3)
        assert remote["landed"] + remote["rejected"] == events and remote["uncommitted"] == 0, remote
        print(
            f"{model:<14}{events:>8}{local['trigger_per_s']:>12,.0f}{remote['trigger_per_s']:>12,.0f}"
            f"{remote['trigger_per_s'] / local['trigger_per_s']:>9.2f}"
        )


if __name__ == "__main__":
    main()
