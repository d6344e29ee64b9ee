"""KServe's part in a canary, played on the real API server (which has no controllers).

A background thread reads one InferenceService and writes the status KServe's Knative-mode
controller would (kserve ``reconcilers/knative/ksvc_reconciler.go`` + Knative routing):

* a new predictor template (anything but ``canaryTrafficPercent``) creates a new revision,
  ready at once or only when the test calls ``make_ready()``;
* no ``canaryTrafficPercent``: 100% to the latest *ready* revision, which then becomes the
  ``latestRolledoutRevision``;
* ``canaryTrafficPercent: p``: p% to the latest ready revision, the rest to ``latestRolledoutRevision``.

``history`` keeps the traffic split (model URI -> percent) of every state the thread saw, so a
test can assert what the stored states would have routed, step by step.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import Counter
from typing import Any

from pipelines.rollout.state import GROUP, PLURAL, VERSION, model_uri_of


class KServeStandIn:
    def __init__(self, api: Any, namespace: str, name: str, *, ready_at_once: bool = True) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.ready_at_once = ready_at_once
        self.revisions: list[tuple[str, str, bool]] = []  # (name, template json, ready)
        self.uris: dict[str, str] = {}
        self.rolled_out: str | None = None
        self.history: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> KServeStandIn:
        self.reconcile()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def make_ready(self) -> None:
        with self._lock:
            self.revisions = [(name, template, True) for name, template, _ in self.revisions]
        self.reconcile()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.reconcile()

    def reconcile(self) -> dict[str, int]:
        with self._lock:
            isvc = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
            predictor = copy.deepcopy(isvc["spec"]["predictor"])
            canary = predictor.pop("canaryTrafficPercent", None)
            template = json.dumps(predictor, sort_keys=True)
            if not self.revisions or self.revisions[-1][1] != template:
                revision = f"{self.name}-predictor-{len(self.revisions) + 1:05d}"
                self.revisions.append((revision, template, self.ready_at_once))
                self.uris[revision] = model_uri_of(predictor["containers"][0])
            ready = [name for name, _, is_ready in self.revisions if is_ready]
            latest_ready = ready[-1] if ready else None
            traffic: Counter[str] = Counter()
            if latest_ready and (canary is None or self.rolled_out is None):
                traffic[latest_ready] = 100
                self.rolled_out = latest_ready
            elif latest_ready and self.rolled_out:
                traffic[latest_ready] += canary
                traffic[self.rolled_out] += 100 - canary
            status = {
                "observedGeneration": isvc["metadata"]["generation"],
                "components": {
                    "predictor": {
                        "latestCreatedRevision": self.revisions[-1][0],
                        "latestReadyRevision": latest_ready,
                        "latestRolledoutRevision": self.rolled_out,
                        "traffic": [
                            {"revisionName": r, "percent": p, "latestRevision": r == latest_ready}
                            for r, p in traffic.items()
                            if p
                        ],
                    }
                },
            }
            if isvc.get("status") != status:
                self.api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": status}
                )
            split: Counter[str] = Counter()
            for revision, percent in traffic.items():
                split[self.uris[revision]] += percent
            shares = {uri: p for uri, p in split.items() if p}
            if not self.history or self.history[-1] != shares:
                self.history.append(shares)
            return shares
