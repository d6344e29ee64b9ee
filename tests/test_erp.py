"""The example ERP end to end, on real parts: Django on PostgreSQL (make stores-up), Celery on
RabbitMQ (make rabbitmq-up), Kafka, the trigger, a ModelServer, headless Chromium.

Rows created through the ORM -> Celery beat's task publishes them -> the trigger lands each once
(a worker killed mid-task, and a re-run from a lost watermark, land no duplicate) -> enough rows
start a retraining; the Sales page shows the served score (equal to a direct V2 call), falls back
to "score unavailable" within its budget when the predictor is stopped and opens the circuit;
a row that breaks the contract is reported with the server's message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings
from pipelines.streaming.landing.folder import folder_event_ids
from pipelines.streaming.retraining.state import RetrainState
from pipelines.streaming.topics import ensure_topics
from tests.erp_world import (
    RABBITMQ_NOT_UP,
    RABBITMQ_PORT,
    ROOT,
    ErpWorld,
    answers,
    drop_database,
    new_world,
    start_model_server,
    wait_until,
)
from tests.stores import Stores

pytestmark = [pytest.mark.integration, pytest.mark.stores, pytest.mark.erp]

MODEL = "lead_score"
TABLE = "sales_opportunity"
BUDGET_S = 2.0  # the page's scoring budget here (a busy shared CI machine); the default is 0.3 s
ENVELOPE = {"event_id", "occurred_at"}


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str


@pytest.fixture(scope="module")
def rabbitmq() -> None:
    if not answers(RABBITMQ_PORT):
        pytest.skip(RABBITMQ_NOT_UP)


@pytest.fixture(scope="module")
def model_server(
    rabbitmq: None, model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    proc, url = start_model_server(model_dirs[MODEL], tmp_path_factory.mktemp("erp-model"))
    try:
        yield Served(proc, url)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait(30)


@pytest.fixture(scope="module")
def world(
    rabbitmq: None, stores: Stores, kafka_broker: str, model_server: Served, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ErpWorld]:
    erp = new_world(stores.env, kafka_broker, model_server.url, tmp_path_factory.mktemp("erp"))
    erp.env["SALES_SCORE_BUDGET_S"] = str(BUDGET_S)
    try:
        yield erp
    finally:
        erp.close()
        drop_database(stores.env, erp.database)


@pytest.fixture(scope="module")
def platform(world: ErpWorld, kafka_broker: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The platform's settings on the world's topics (its own data folder and trigger group)."""
    settings = Settings().model_copy(
        update={
            "kafka_bootstrap": kafka_broker,
            "data_dir": tmp_path_factory.mktemp("erp-platform"),
            "kafka_topic_prefix": world.env["CONSTRUCTOS_KAFKA_TOPIC_PREFIX"],
            "trigger_group": f"trigger-{uuid.uuid4().hex[:10]}",
            "pipeline_runner": "local",
        }
    )
    ensure_topics(settings, [MODEL])
    return settings


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium is not installed (Debian packages chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def web(world: ErpWorld) -> str:
    return world.web()[1]


# -- publishing ---------------------------------------------------------------------------------


def _watermark() -> Any:
    from publishing.models import Watermark

    return Watermark.objects.filter(source=f"{TABLE}:{MODEL}").first()


def _published_to_the_end() -> bool:
    from sales.models import Opportunity

    last = Opportunity.objects.filter(won__isnull=False).order_by("updated_at", "pk").last()
    mark = _watermark()
    return bool(mark and last and (mark.updated_at, mark.last_pk) == (last.updated_at, last.pk))


def _events(settings: Settings) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        settings.kafka_topic_prefix + load_spec(MODEL).source_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=4000,
    )
    try:
        return [json.loads(record.value) for record in consumer]
    finally:
        consumer.close()


def test_beat_publishes_each_closed_opportunity_once_and_enough_rows_start_a_retraining(
    world: ErpWorld, platform: Settings
) -> None:
    from constructos_client.publisher import event_id
    from publishing.models import EPOCH
    from sales.models import Opportunity

    spec = load_spec(MODEL)
    rows = spec.retrain.min_new_rows
    events = to_events(generate(MODEL, rows, seed=11), seed=11)
    fields = {f.name for f in Opportunity._meta.concrete_fields}
    Opportunity.objects.bulk_create(
        [
            Opportunity(title=f"Opportunity {i}", **{k: v for k, v in e.items() if k in fields})
            for i, e in enumerate(events)
        ]
        + [  # still open: no outcome, nothing to publish
            Opportunity(
                title="open",
                contact_name="A. Person",
                contact_email="a@example.com",
                customer_industry="Energy",
                opportunity_value=1000,
            )
            for _ in range(20)
        ]
    )
    closed = list(Opportunity.objects.filter(won__isnull=False).order_by("updated_at", "pk"))
    expected = {event_id(TABLE, o.pk, o.updated_at) for o in closed}
    assert len(expected) == rows

    # beat every 2 s; the first worker publishes 2500-row chunks and is killed as soon as its first
    # events reach Kafka: mid-chunk, before the watermark moved past them
    watch = KafkaConsumer(
        platform.kafka_topic_prefix + spec.source_topic,
        bootstrap_servers=platform.kafka_bootstrap,
        auto_offset_reset="earliest",
    )
    seen = [0]

    def first_events() -> bool:
        seen[0] += sum(len(batch) for batch in watch.poll(timeout_ms=50).values())
        return seen[0] > 0

    world.celery("beat", ERP_PUBLISH_INTERVAL_S="2")
    first = world.celery("worker", ERP_PUBLISH_CHUNK="2500", ERP_PUBLISH_PAUSE_S="1")
    try:
        wait_until(first_events, 120, lambda: f"none sent:\n{first.text()[-3000:]}")
        first.kill()
    finally:
        watch.close()
    killed_at = mark.published if (mark := _watermark()) else 0
    assert killed_at < rows, "the worker finished before it was killed: the test proves nothing"
    second = world.celery("worker")  # the task that was running is delivered again (acks_late)
    wait_until(_published_to_the_end, 120, lambda: f"not all published:\n{second.text()[-3000:]}")

    # a lost watermark (a restored backup, say): the next beat run re-sends every row, same ids
    resent_from = _watermark().published
    type(_watermark()).objects.filter(source=f"{TABLE}:{MODEL}").update(updated_at=EPOCH, last_pk=0)
    wait_until(lambda: _watermark().published >= resent_from + rows and _published_to_the_end(), 120, "no re-run")
    second.stop()

    sent = _events(platform)
    ids = [e["event_id"] for e in sent]
    allowed = ENVELOPE | set(spec.feature_names) | {spec.target.name}
    assert set(ids) == expected  # every closed opportunity, and nothing else
    assert len(sent) >= 2 * rows  # the re-run did send them all again
    assert all(set(e) <= allowed for e in sent), "a column outside the spec left the service"
    assert not any(pii in e for e in sent for pii in spec.pii_names)

    # the trigger (kfp.local runner) lands each event once, then starts a retraining
    log = world.logs / "trigger.log"
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP": platform.kafka_bootstrap,
        "CONSTRUCTOS_DATA_DIR": str(platform.data_dir),
        "CONSTRUCTOS_KAFKA_TOPIC_PREFIX": platform.kafka_topic_prefix,
        "CONSTRUCTOS_TRIGGER_GROUP": platform.trigger_group,
        "CONSTRUCTOS_PIPELINE_RUNNER": "local",
    }
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_")}
    with log.open("wb") as out:
        trigger = subprocess.Popen(
            [sys.executable, "-m", "pipelines.streaming.trigger", "--models", MODEL, "--log-level", "DEBUG"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    state = RetrainState(platform.ledger_store)
    batches = re.compile(rf"{MODEL}: landed (\d+), skipped (\d+) already landed")

    def counted() -> tuple[int, int]:
        found = batches.findall(log.read_text(errors="replace"))
        return sum(int(a) for a, _ in found), sum(int(b) for _, b in found)

    try:
        wait_until(
            lambda: sum(counted()) >= len(sent) and state.get(f"{MODEL}-rows-0") is not None,
            180,
            lambda: f"landed/skipped {counted()} of {len(sent)}:\n{log.read_text()[-3000:]}",
        )
    finally:
        os.killpg(trigger.pid, signal.SIGKILL)  # the training it started too
        trigger.wait(30)
    landed, skipped = counted()
    entry = state.get(f"{MODEL}-rows-0")
    print(f"\nkafka events {len(sent)} (worker killed at {killed_at} acknowledged), landed {landed}, skipped {skipped}")
    assert (landed, skipped) == (rows, len(sent) - rows)
    assert folder_event_ids(platform.landing_dir, MODEL) == expected
    assert entry is not None and entry["landed_rows"] == rows and entry["status"] in ("pending", "launched")


# -- the Sales page -----------------------------------------------------------------------------


def _v2_body(features: dict[str, Any]) -> dict[str, Any]:
    types = {f.name: f.v2_datatype for f in load_spec(MODEL).features}
    return {"inputs": [{"name": k, "datatype": types[k], "shape": [1], "data": [v]} for k, v in features.items()]}


def _opportunity(**values: Any) -> Any:
    from sales.models import Opportunity

    base = {"title": "Bridge A7", "contact_name": "Jane Roe", "contact_email": "jane@example.com"}
    return Opportunity.objects.create(**(base | values))


def test_sales_page_shows_the_served_score_and_grade(
    world: ErpWorld, web: str, browser: Any, model_server: Served
) -> None:
    from sales.scoring import grade
    from selenium.webdriver.common.by import By

    item = _opportunity(customer_industry="Construction", opportunity_value=5_000_000, lead_source="referral",
                        region="north", interactions=12, existing_customer=True)  # fmt: skip
    for _ in range(3):  # a cold server thread on a busy machine may miss the budget once: that is the fallback
        browser.get(f"{web}/sales/opportunities/{item.pk}/")
        if found := browser.find_elements(By.ID, "score"):
            break
    assert found, f"no score on the page:\n{browser.page_source}\n{httpx.get(f'{web}/sales/score-metrics').text}"
    score = int(found[0].text)
    shown_grade = browser.find_element(By.ID, "grade").text

    direct = httpx.post(f"{model_server.url}/v2/models/{MODEL}/infer", json=_v2_body(item.features()), timeout=30)
    assert direct.status_code == 200, direct.text
    served = {o["name"]: o["data"][0] for o in direct.json()["outputs"]}
    assert score == served["score"] and shown_grade == grade(served["score"])
    assert browser.find_element(By.ID, "lead-score").get_attribute("data-circuit") == "closed"


def test_a_row_that_breaks_the_contract_is_reported_with_the_servers_message(
    world: ErpWorld, web: str, browser: Any, model_server: Served
) -> None:
    from constructos_client import Client, InvalidRow
    from selenium.webdriver.common.by import By

    row = {"customer_industry": "Shipbuilding", "opportunity_value": 2.5e6}
    server = httpx.post(f"{model_server.url}/v2/models/{MODEL}/infer", json=_v2_body(row), timeout=30)
    assert server.status_code == 400
    client = Client(model_server.url, timeout_s=10)
    with pytest.raises(InvalidRow) as caught:
        client.predict(MODEL, row, fallback={"score": None})  # a fallback never hides a contract breach
    assert caught.value.message == server.json()["error"] and caught.value.field == "customer_industry"
    assert caught.value.status == 400
    with pytest.raises(InvalidRow) as local:  # the same breach, found before sending (the contract route)
        client.predict(MODEL, row, check=True)
    assert local.value.field == "customer_industry" and local.value.status is None

    item = _opportunity(**row)
    browser.get(f"{web}/sales/opportunities/{item.pk}/")
    unavailable = browser.find_element(By.ID, "score-unavailable")
    assert unavailable.text == "score unavailable"
    assert server.json()["error"] in unavailable.get_attribute("title")


def test_client_query_route_retries_and_hooks(model_server: Served) -> None:
    from constructos_client import CallEvent, Client, ConnectionFailed

    from tests.helpers import free_port

    events: list[CallEvent] = []
    client = Client(model_server.url, timeout_s=10, hooks=[events.append])
    row = {"customer_industry": "Infrastructure", "opportunity_value": 1_200_000.0, "interactions": 4}
    v2 = client.predict(MODEL, row)
    query = client.predict_query(MODEL, {"industry": "Infrastructure", "value": 1_200_000, "interactions": 4})
    assert query.outputs == v2.outputs and query.version == v2.version and not v2.fallback
    assert [(e.route, e.outcome, e.attempts) for e in events] == [("v2", "ok", 1), ("query", "ok", 1)]

    # nothing listens: refused connections are retried (2 retries, jittered back-off), within the budget
    events.clear()
    gone = Client(f"http://127.0.0.1:{free_port()}", timeout_s=2, retries=2, hooks=[events.append])
    with pytest.raises(ConnectionFailed):
        gone.predict(MODEL, row)
    (event,) = events
    assert (event.outcome, event.attempts, event.fallback) == ("unavailable", 3, False) and event.elapsed_s < 2
    answer = gone.predict(MODEL, row, fallback=lambda error: {"score": None, "why": type(error).__name__})
    assert answer.fallback and answer.outputs == {"score": None, "why": "ConnectionFailed"}


def test_with_the_predictor_stopped_the_page_falls_back_within_its_budget_and_the_circuit_opens(
    world: ErpWorld, web: str, browser: Any, model_server: Served
) -> None:
    from selenium.webdriver.common.by import By

    item = _opportunity(customer_industry="Energy", opportunity_value=750_000)
    page = f"{web}/sales/opportunities/{item.pk}/"
    assert httpx.get(page, timeout=30).status_code == 200  # scored while the predictor is up
    model_server.proc.send_signal(signal.SIGSTOP)  # stopped: connections are accepted, nothing answers
    try:
        times = []
        for _ in range(7):
            start = time.perf_counter()
            answer = httpx.get(page, timeout=30)
            times.append(time.perf_counter() - start)
            assert answer.status_code == 200 and "score unavailable" in answer.text
        print(f"\npage times with the predictor stopped (s): {[round(t, 3) for t in times]}")
        assert max(times) < BUDGET_S + 0.5  # the budget, plus the page itself on a busy machine
        assert min(times[5:]) < 0.2 * BUDGET_S  # the circuit is open: no waiting at all
        browser.get(page)
        assert browser.find_element(By.ID, "score-unavailable").text == "score unavailable"
        assert browser.find_element(By.ID, "lead-score").get_attribute("data-circuit") == "open"
        metrics = httpx.get(f"{web}/sales/score-metrics", timeout=30).json()
        assert metrics["circuit"] == "open" and metrics["calls"]["circuit_open"] >= 2
        assert metrics["calls"]["unavailable"] >= 5 and metrics["calls"]["fallback"] >= 7
    finally:
        model_server.proc.send_signal(signal.SIGCONT)
    model_server.proc.terminate()  # and now gone: refused connections, still the fallback
    model_server.proc.wait(30)
    answer = httpx.get(page, timeout=30)
    assert answer.status_code == 200 and "score unavailable" in answer.text


@pytest.mark.parametrize(("app", "model"), [("finance", "credit_risk"), ("inventory", "stock_demand")])
def test_finance_and_inventory_tasks_publish_events_the_trigger_accepts(
    world: ErpWorld, platform: Settings, app: str, model: str
) -> None:
    """The other services' tasks (run in this process): their rows, anonymised, pass the trigger's
    intake as they are, and a second run sends nothing."""
    import importlib

    from pipelines.streaming.intake.validation import Intake

    spec = load_spec(model)
    ensure_topics(platform, [model])
    table = importlib.import_module(f"{app}.models")
    source = next(m for m in vars(table).values() if isinstance(m, type) and hasattr(m, "_meta"))
    fields = {f.name for f in source._meta.concrete_fields}
    events = to_events(generate(model, 200, seed=5), seed=5)
    source.objects.bulk_create([source(**{k: v for k, v in e.items() if k in fields}) for e in events])
    task = importlib.import_module(f"{app}.tasks").publish
    assert task() == 200 and task() == 0

    consumer = KafkaConsumer(
        platform.kafka_topic_prefix + spec.source_topic,
        bootstrap_servers=platform.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=4000,
    )
    raw = [record.value for record in consumer]
    consumer.close()
    good, rejects = Intake(spec, platform.trigger_max_event_bytes).split(raw)
    assert (len(good), rejects) == (200, [])
    assert not any(pii in event for _, event in good for pii in spec.pii_names)
