"""``python -m pipelines.monitoring``: the monitoring service."""

from pipelines.monitoring.service import main

main()
