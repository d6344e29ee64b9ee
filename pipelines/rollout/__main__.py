"""``python -m pipelines.rollout``: canary rollouts (status, start, step, promote, rollback, analyze, auto)."""

import sys

from pipelines.rollout.cli import main

sys.exit(main())
