"""The store layer against a local folder and against the real S3 server (``make stores-up``).

Every behaviour test runs on both: what the landing and the ledgers rely on (atomic visibility,
put-if-absent with exactly one winner, compare-and-swap) must hold on object storage too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipelines.storage import Store, StoreUnavailable
from tests.stores import Stores

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["file", pytest.param("s3", marks=[pytest.mark.stores, pytest.mark.integration])])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return Store(tmp_path.as_uri())
    stores: Stores = request.getfixturevalue("stores")
    return Store(stores.prefix_uri("storage"), endpoint_url=stores.endpoint)


def test_put_read_list_delete(store: Store) -> None:
    assert store.list_keys() == []
    store.put("a/part-1.parquet", b"one")
    store.put("a/part-2.parquet", b"two")
    store.put("b/notes.txt", b"x")
    assert store.read_bytes("a/part-1.parquet") == b"one"
    assert store.list_keys("a") == ["a/part-1.parquet", "a/part-2.parquet"]
    assert store.list_keys(suffix=".parquet") == ["a/part-1.parquet", "a/part-2.parquet"]
    assert store.list_keys("nothing-here") == []
    assert store.read_many(["a/part-1.parquet", "b/notes.txt"]) == {"a/part-1.parquet": b"one", "b/notes.txt": b"x"}
    store.put("a/part-1.parquet", b"uno")
    assert store.read_bytes("a/part-1.parquet") == b"uno"
    store.delete("a/part-1.parquet")
    store.delete("a/part-1.parquet")  # absent: no error
    assert not store.exists("a/part-1.parquet")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("a/part-1.parquet")
    assert store.url("a/part-2.parquet") == f"{store.uri}/a/part-2.parquet"


def test_put_if_absent_keeps_the_first_write(store: Store) -> None:
    assert store.put_if_absent("claims/k1", b"first")
    assert not store.put_if_absent("claims/k1", b"second")
    assert store.read_bytes("claims/k1") == b"first"


def test_one_winner_among_concurrent_writers(store: Store) -> None:
    payloads = [f"writer-{i}".encode() * 1000 for i in range(12)]
    with ThreadPoolExecutor(len(payloads)) as pool:
        won = list(pool.map(lambda p: store.put_if_absent("race/key", p), payloads))
    assert sum(won) == 1
    assert store.read_bytes("race/key") == payloads[won.index(True)]
    assert store.list_keys("race") == ["race/key"]  # no temporary file is left or listed


def test_replace_if_match_refuses_a_stale_version(store: Store) -> None:
    store.put("ledger.json", b'{"n": 1}')
    data, tag = store.read_tagged("ledger.json")
    assert data == b'{"n": 1}'
    assert store.replace_if_match("ledger.json", b'{"n": 2}', tag)
    assert not store.replace_if_match("ledger.json", b'{"n": 3}', tag)  # tag is stale now
    assert store.read_bytes("ledger.json") == b'{"n": 2}'
    assert not store.replace_if_match("missing.json", b"{}", tag)


def test_concurrent_increments_lose_nothing(store: Store) -> None:
    store.put("counter", b"0")

    def increment(_: int) -> None:
        while True:
            data, tag = store.read_tagged("counter")
            if store.replace_if_match("counter", str(int(data) + 1).encode(), tag):
                return

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(increment, range(30)))
    assert store.read_bytes("counter") == b"30"


def test_upload_dir(store: Store, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "validations").mkdir(parents=True)
    (site / "index.html").write_text("<html/>")
    (site / "validations" / "run.html").write_text("<p/>")
    keys = store.upload_dir(site, "docs/credit_risk")
    assert keys == ["docs/credit_risk/index.html", "docs/credit_risk/validations/run.html"]
    assert store.read_bytes("docs/credit_risk/validations/run.html") == b"<p/>"


def test_bad_uris_and_keys() -> None:
    with pytest.raises(ValueError, match="file:// or s3://"):
        Store("gs://bucket/x")
    with pytest.raises(ValueError, match="names no bucket"):
        Store("s3:///prefix")
    with pytest.raises(ValueError, match="bad store key"):
        Store("file:///tmp").path("../etc/passwd")


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "unused")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "unused")
    store = Store("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(StoreUnavailable, match=r"s3://bucket/prefix \(k\)"):
        store.put_if_absent("k", b"x")


WRITER = textwrap.dedent(
    """
    import sys
    from pipelines.storage import Store
    store = Store(sys.argv[1], endpoint_url=sys.argv[2] or None)
    for i in range(4):
        data = bytes([i]) * (48 * 2**20)
        print(f"writing {i}", flush=True)
        store.put_if_absent(f"big/{i}", data)
    """
)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["file", pytest.param("s3", marks=pytest.mark.stores)])
def test_a_killed_writer_leaves_no_half_object(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """SIGKILL in the middle of 48 MB uploads: every visible object is whole, and the key of the
    interrupted one can still be created afterwards."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    if kind == "file":
        uri, endpoint = tmp_path.as_uri(), ""
    else:
        stores: Stores = request.getfixturevalue("stores")
        uri, endpoint = stores.prefix_uri("killed"), stores.endpoint
        env |= stores.client_env()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, uri, endpoint], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("writing 1"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    store = Store(uri, endpoint_url=endpoint or None)
    for key in store.list_keys("big"):
        i = int(key.rsplit("/", 1)[1])
        assert store.read_bytes(key) == bytes([i]) * (48 * 2**20), f"{key} is not whole"
    assert "big/3" not in store.list_keys("big")
    assert store.put_if_absent("big/3", b"after the crash")
