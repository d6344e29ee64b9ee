"""The trigger's metrics and health port, over real HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from pipelines.streaming.trigger.health import Heartbeat, serve_health
from tests.helpers import free_port


@pytest.fixture
def port() -> Iterator[tuple[str, Counter[str], Heartbeat]]:
    stats: Counter[str] = Counter(landed=7, dead_lettered=2)
    heartbeat = Heartbeat()
    number = free_port()
    server = serve_health(number, stats, heartbeat, max_silence_s=60, host="127.0.0.1")
    yield f"http://127.0.0.1:{number}", stats, heartbeat
    server.shutdown()
    server.server_close()


def test_metrics_count_what_the_trigger_did(port: tuple[str, Counter[str], Heartbeat]) -> None:
    url, stats, _ = port
    stats["landed"] += 3
    text = httpx.get(f"{url}/metrics").text
    assert 'constructos_trigger_events_total{outcome="landed"} 10.0' in text
    assert 'constructos_trigger_events_total{outcome="dead_lettered"} 2.0' in text
    assert "constructos_trigger_heartbeat_age_seconds " in text


def test_healthz_fails_once_the_loop_is_silent(port: tuple[str, Counter[str], Heartbeat]) -> None:
    url, _, heartbeat = port
    assert httpx.get(f"{url}/healthz").status_code == 200
    heartbeat.at -= 61  # the loop last beat 61 s ago
    answer = httpx.get(f"{url}/healthz")
    assert answer.status_code == 503 and "no heartbeat" in answer.text
    heartbeat.beat()
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/nope").status_code == 404
