"""Small JSON documents on a :class:`~pipelines.storage.Store`, changed only by compare-and-swap.

The trigger's ledgers (:mod:`~pipelines.streaming.retraining.state`, :mod:`~pipelines.streaming.retraining.launch`)
are such documents, shared by every replica through ``Settings.ledger_uri``: a document is created
with a conditional create (``If-None-Match: *``) and changed with a conditional replace
(``If-Match: <etag>``), so of two replicas changing one document at once exactly one succeeds and the
other reads the new version and tries again. No locks, nothing held by a process that may die.

What each document holds is typed in :mod:`pipelines.streaming.retraining.ledger_docs`: pass the type to
:func:`read_doc` (or annotate the ``change`` of :func:`update_doc`) and the document comes back as it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast, overload

from pipelines.storage import Store

Doc = dict[str, Any]
D = TypeVar("D", bound=Mapping[str, Any])  # a document type of :mod:`~pipelines.streaming.retraining.ledger_docs`

#: tries of :func:`update_doc` before it gives up (each lost try means another writer succeeded).
MAX_TRIES = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(key: str) -> str:
    """``key`` as one path segment: kept as it is when it is already safe, else made safe and
    suffixed with a hash of the original (``a/b`` and ``a_b`` stay two names)."""
    if not _UNSAFE.search(key) and len(key) <= 150 and key.strip("."):
        return key
    return f"{_UNSAFE.sub('_', key)[:120]}~{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, default=str, sort_keys=True).encode()


@overload
def read_doc(store: Store, key: str) -> tuple[Doc | None, str | None]: ...
@overload
def read_doc(store: Store, key: str, kind: type[D]) -> tuple[D | None, str | None]: ...
def read_doc(store: Store, key: str, kind: type[Mapping[str, Any]] = dict) -> tuple[Any, str | None]:
    """The document (of type ``kind``: not checked, JSON as stored) and its version tag;
    ``(None, None)`` when it does not exist."""
    try:
        data, tag = store.read_tagged(key)
    except FileNotFoundError:
        return None, None
    return json.loads(data), tag


def write_doc(store: Store, key: str, doc: Mapping[str, Any], tag: str | None) -> bool:
    """Create (``tag`` None) or replace the version ``tag``; False if someone else wrote first."""
    if tag is None:
        return store.put_if_absent(key, dumps(doc))
    return store.replace_if_match(key, dumps(doc), tag)


def update_doc(store: Store, key: str, change: Callable[[D | None], D | None]) -> tuple[D | None, bool]:
    """Apply ``change`` (current document or None → new document, or None to leave it) by
    compare-and-swap, reading again after every lost race. Returns the document and whether this
    call wrote it. ``change`` may run several times: it must be a pure function of its argument."""
    for _ in range(MAX_TRIES):
        stored, tag = read_doc(store, key)
        current = None if stored is None else cast(D, stored)
        new = change(None if current is None else cast(D, dict(current)))  # a copy: ``change`` may edit it
        if new is None or new == current:
            return current, False
        if write_doc(store, key, new, tag):
            return new, True
    raise RuntimeError(f"{store.url(key)}: {MAX_TRIES} writers in a row changed it first")
