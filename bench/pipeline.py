"""Pipeline wall time per step at growing data sizes (a fresh data dir per size, MLflow on sqlite).

    python -m bench.pipeline [--rows 10000 100000 1000000] [--model credit_risk]

Each step's time is read from the kfp.local task log lines (task start -> finish, so it includes
the subprocess start and imports); "total" is the whole local pipeline run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
from datetime import datetime

STEPS = ("extract", "validate", "tune", "train", "evaluate", "deploy")
_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - \w+ - (Executing task|Task) '(\w+)'(?: finished)?")


def step_seconds(log: str) -> dict[str, float]:
    """Task durations from kfp.local's ``Executing task 'x'`` / ``Task 'x' finished`` lines."""
    started: dict[str, datetime] = {}
    out: dict[str, float] = {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        when = datetime.strptime(match[1], "%H:%M:%S.%f")
        if match[2] == "Executing task":
            started[match[3]] = when
        elif "finished" in line and match[3] in started:
            out[match[3]] = (when - started[match[3]]).total_seconds()
    return out


def bench(model: str, rows: int) -> dict[str, float]:
    from pipelines.demo import land_synthetic
    from pipelines.settings import get_settings
    from pipelines.training.run import run_local

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CONSTRUCTOS_DATA_DIR"] = tmp
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        get_settings.cache_clear()
        land_synthetic(model, rows, seed=rows)
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured):  # kfp.local logs task progress on stdout
                summary = run_local(model)
        except RuntimeError:
            print(captured.getvalue()[-4000:], file=sys.stderr)  # the failing step's own words
            raise
        times = step_seconds(captured.getvalue())
        times["total"] = summary.seconds
        name = next(iter(summary.metrics)) if summary.metrics else ""
        print(f"  {model} {rows:,} rows: {name} {summary.metrics.get(name, float('nan')):.4f}", file=sys.stderr)
    get_settings.cache_clear()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--model", default="credit_risk")
    args = parser.parse_args(argv)
    results = {}
    for rows in args.rows:
        results[rows] = bench(args.model, rows)
    header = f"{'rows':>10} " + " ".join(f"{s:>9}" for s in (*STEPS, "total"))
    print(f"pipeline wall time per step (s), model {args.model}\n{header}")
    for rows, times in results.items():
        print(f"{rows:>10,} " + " ".join(f"{times.get(s, float('nan')):>9.1f}" for s in (*STEPS, "total")))
    base_rows = min(results)
    base = results[base_rows]["total"]
    for rows, times in results.items():
        if rows != base_rows:  # linear cost: extra seconds per extra 100k rows stays flat
            per_100k = (times["total"] - base) / (rows - base_rows) * 100_000
            print(
                f"  {rows:,} rows: {times['total'] / base:.2f}x the {base_rows:,}-row run; "
                f"+{per_100k:.1f} s per 100k rows"
            )
    print("  target: 100,000 rows end to end <= 60 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
