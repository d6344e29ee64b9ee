"""Trigger memory as the landing store grows: resident memory of a trigger process after it lands
``--events`` new events on top of 1M and then 10M ids already landed (target: flat, +-50 MiB).

    python -m bench.trigger_memory --events 50000     # needs a broker: make kafka-up

The ids already landed are written straight into the landing index (the part files they would
belong to are not written: the trigger never reads them); the new events go through the broker
and a real ``python -m pipelines.streaming.trigger`` process, whose peak RSS (with its landing process) is sampled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings, get_settings
from pipelines.streaming.landing.index import SqliteIndex
from pipelines.streaming.publish import publish_events
from pipelines.streaming.topics import ensure_topics

MODEL = "credit_risk"
CHUNK = 250_000


def prefill(index: SqliteIndex, start: int, stop: int) -> None:
    """Record ids ``start..stop`` as landed (UUID-shaped, 36 characters, like real event ids)."""
    for first in range(start, stop, CHUNK):
        ids = {str(uuid.UUID(int=i)): i for i in range(first, min(stop, first + CHUNK))}
        assert index.commit(MODEL, f"prefill-{first}", ids) == []


def peak_rss_mib(settings: Settings) -> tuple[float, float]:
    """Run the trigger until idle: peak resident memory (MiB) of it and its landing process; wall time (s)."""
    env = os.environ | {
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "CONSTRUCTOS_DATA_DIR": str(settings.data_dir),
        "CONSTRUCTOS_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "CONSTRUCTOS_TRIGGER_GROUP": settings.trigger_group,
    }
    command = [sys.executable, "-m", "pipelines.streaming.trigger", "--models", MODEL, "--no-retrain"]
    start = time.perf_counter()
    proc = subprocess.Popen([*command, "--exit-when-idle", "3"], env=env, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(OSError, StopIteration, ValueError):
            peak = max(peak, sum(_rss_kib(pid) for pid in _tree(proc.pid)))
        time.sleep(0.2)
    return peak / 1024, time.perf_counter() - start


def _tree(pid: int) -> list[int]:
    """``pid`` and its children (the trigger and its landing process)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(child) for child in children)]


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trigger_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="new events per step (default 50000)")
    parser.add_argument("--sizes", default="1000000,10000000", help="ids already landed at each step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = get_settings().model_copy(
            update={"kafka_topic_prefix": f"bench-{uuid.uuid4().hex[:8]}.", "data_dir": Path(tmp)}
        )
        ensure_topics(settings, [MODEL])
        index = SqliteIndex(settings.landing_dir)
        print(
            f"{'ids landed':>12}{'prefill s':>10}{'new events':>11}{'landed':>9}{'peak RSS MiB':>13}{'index MiB':>10}"
        )
        landed = 0
        for step, size in enumerate(int(s) for s in args.sizes.split(",")):
            start = time.perf_counter()
            prefill(index, landed, size)
            filled = time.perf_counter() - start
            publish_events(MODEL, to_events(generate(MODEL, args.events, seed=step), seed=step), settings)
            rss, _ = peak_rss_mib(settings)
            landed = index.rows(MODEL)
            db = sum(p.stat().st_size for p in (settings.landing_dir / ".index").iterdir()) / (1 << 20)
            print(f"{size:>12,}{filled:>10.0f}{args.events:>11,}{landed - size:>9,}{rss:>13.0f}{db:>10.0f}")
            landed = size + args.events
        index.close()


if __name__ == "__main__":
    main()
