"""The Kafka trigger: lands the models' events and launches retraining (``python -m pipelines.streaming.trigger``).

What it does is told in :mod:`pipelines.streaming.trigger.loop`.
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
from collections.abc import Iterable

from pipelines.streaming.logs import configure_streaming_logging
from pipelines.streaming.trigger.health import serve_health
from pipelines.streaming.trigger.loop import Trigger
from pipelines.streaming.trigger.processes import end_descendants


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.streaming.trigger", description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="comma-separated models (default: all, or CONSTRUCTOS_TRIGGER_MODELS)")
    parser.add_argument("--no-retrain", action="store_true", help="only land events (backfills): never launch")
    parser.add_argument("--exit-when-idle", type=float, metavar="S", help="stop after S seconds without records")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--kafka-log-level",
        default="ERROR",
        choices=["INFO", "WARNING", "ERROR"],
        help="the Kafka client's own log (never DEBUG: it prints raw records)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    configure_streaming_logging(args.log_level, args.kafka_log_level)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: where is a hung trigger?
    trigger = Trigger(models=args.models.split(",") if args.models else None, retrain=not args.no_retrain)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: trigger.stop())
    settings = trigger.settings
    if settings.trigger_metrics_port:  # silent longer than a batch or a reconnect pause could last: hung
        silence = max(120.0, 2 * settings.kafka_retry_max_s)
        serve_health(
            settings.trigger_metrics_port, trigger.stats, trigger.heartbeat, silence, progress=trigger.progress
        )
    trigger.run(exit_when_idle_s=args.exit_when_idle)
    if trigger.handed_back:  # the abandoned run's own processes (kfp.local's tasks) end with us
        end_descendants()


if __name__ == "__main__":
    main()
