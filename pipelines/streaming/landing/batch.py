"""One poll's events of one model: checked, landed exactly once, duplicates and conflicts told apart.

An event id lands once (:func:`pipelines.streaming.landing.exactly_once.land`). The same id again with the same
content (a digest of its landed values) is a *duplicate*: counted, skipped. With *different*
content it is a *conflict*: the first landed version wins, the newcomer is refused with reason
``conflicting-duplicate`` (the trigger dead-letters it). An id landed before the specified digest
scheme holds a legacy digest: the newcomer is compared in that scheme
(:mod:`pipelines.streaming.intake.digests`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from pipelines.storage import Store
from pipelines.streaming.intake.digests import Legacy
from pipelines.streaming.intake.validation import Intake, Reject
from pipelines.streaming.landing import exactly_once
from pipelines.streaming.landing.index import LandingIndex

CONFLICT = "conflicting-duplicate"


@dataclass
class BatchOutcome:
    rejects: list[Reject] = field(default_factory=list)  # by position in the values given
    landed: int = 0
    duplicates: int = 0
    conflicts: int = 0
    landed_at: list[int] = field(default_factory=list)  # positions of the events landed here


def land_batch(
    intake: Intake, store: Store, index: LandingIndex, model: str, values: Sequence[bytes | None]
) -> BatchOutcome:
    """Land the model's good events once each; everything else comes back as a reject."""
    good, rejects, table = intake.split_table(values, datetime.now(UTC).isoformat())
    versions = [(i, event["event_id"], h) for (i, event), h in zip(good, intake.digests(table), strict=True)]
    first: dict[str, tuple[int, int]] = {}  # event id -> (row in table, digest) of its first copy
    for row, (_, event_id, digest) in enumerate(versions):
        first.setdefault(event_id, (row, digest))
    winner = index.landed(model, list(first))
    fresh = {event_id: digest for event_id, (_, digest) in first.items() if event_id not in winner}
    lost: list[str] = []
    if fresh:
        rows = table.take([first[event_id][0] for event_id in fresh])
        lost = exactly_once.land(store, index, model, rows, fresh)
        winner |= index.landed(model, lost)  # another replica landed these first
    winner |= {event_id: digest for event_id, digest in fresh.items() if event_id not in winner}
    landed_here = {versions[first[e][0]][0] for e in fresh if e not in lost}
    versions = _in_winners_scheme(intake, table, versions, winner)
    conflicts = [i for i, event_id, digest in versions if i not in landed_here and digest != winner[event_id]]
    rejects += [Reject(i, "event_id", CONFLICT) for i in conflicts]
    rejects.sort(key=lambda r: r.index)
    duplicates = len(good) - len(landed_here) - len(conflicts)
    return BatchOutcome(rejects, len(landed_here), duplicates, len(conflicts), sorted(landed_here))


def _in_winners_scheme(
    intake: Intake, table: pa.Table, versions: list[tuple[int, str, int]], winner: dict[str, int]
) -> list[tuple[int, str, int]]:
    """``versions`` with the digest of each row whose id was landed under the legacy scheme
    recomputed in that scheme (rare: replays of events landed before the upgrade)."""
    old = [row for row, (_, event_id, _) in enumerate(versions) if isinstance(winner[event_id], Legacy)]
    if not old:
        return versions
    legacy = dict(zip(old, intake.legacy_digests(table.take(old)), strict=True))
    return [(i, event_id, legacy.get(row, digest)) for row, (i, event_id, digest) in enumerate(versions)]
