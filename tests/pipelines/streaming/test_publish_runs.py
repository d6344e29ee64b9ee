"""The publisher against the real broker: each run sends new events, ``--replay`` the same again."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from pipelines.settings import Settings, get_settings
from pipelines.streaming.publish import main as publish_main
from pipelines.streaming.trigger.loop import Trigger
from tests.pipelines.streaming.trigger.test_kafka_trigger import Launches, landed_rows

pytestmark = pytest.mark.integration
MODEL = "credit_risk"


@pytest.fixture
def publish(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[object]:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka_settings.kafka_bootstrap)
    monkeypatch.setenv("CONSTRUCTOS_KAFKA_TOPIC_PREFIX", kafka_settings.kafka_topic_prefix)
    get_settings.cache_clear()

    def run(*args: str) -> str:
        publish_main([MODEL, *args])
        found = re.search(r"run (\w+) \(send it again with --replay \1\)", capsys.readouterr().out)
        assert found
        return found.group(1)

    yield run
    get_settings.cache_clear()


def test_each_run_publishes_new_events_and_replay_resends_the_same(kafka_settings: Settings, publish: object) -> None:
    first = publish("--rows", "300")  # type: ignore[operator]
    second = publish("--rows", "300")  # type: ignore[operator]  # the same command again: 300 more rows
    other_seed = publish("--rows", "100", "--seed", "1")  # type: ignore[operator]
    assert len({first, second, other_seed}) == 3
    trigger = Trigger(kafka_settings, [MODEL], launcher=Launches())
    trigger.run(exit_when_idle_s=2)
    assert trigger.stats["landed"] == 700 and trigger.stats["duplicates"] == 0 and trigger.stats["conflicts"] == 0
    assert publish("--rows", "300", "--replay", first) == first  # type: ignore[operator]
    replay = Trigger(kafka_settings, [MODEL], launcher=Launches())
    replay.run(exit_when_idle_s=2)
    assert replay.stats["duplicates"] == 300 and replay.stats["landed"] == 0 and replay.stats["conflicts"] == 0
    ids = [r["event_id"] for r in landed_rows(kafka_settings, MODEL)]
    assert len(ids) == len(set(ids)) == 700 and sum(i.startswith(f"{first}-s0-") for i in ids) == 300
