"""The smoke test a new version passes before it gets traffic (blue-green ``switch``, ``smoke``).

It calls the new version on its own endpoint — its Service in Standard mode, its revision's tag
URL in Knative mode — never through the shared route: V2 ``ready``, then one V2 ``infer`` of a
request built from the feature spec (every feature in range). It passes when both answer 200, the
answer names the expected model version and carries every output of the spec, all finite.
The request and the judgement are pure; :func:`smoke_test` is the HTTP shell (httpx).
"""

from __future__ import annotations

import math
from typing import Any

from feature_specs.spec import Feature, FeatureSpec


def _value(feature: Feature) -> Any:
    if feature.dtype == "category":
        return (feature.categories or ("",))[0]
    if feature.dtype == "bool":
        return False
    low = feature.min if feature.min is not None else (feature.max - 1 if feature.max is not None else 1.0)
    high = feature.max if feature.max is not None else low + 1
    middle = (low + high) / 2
    return round(middle) if feature.dtype == "int" else float(middle)


def smoke_request(spec: FeatureSpec, rows: int = 2) -> dict[str, Any]:
    """A V2 infer body (one tensor per feature, shape ``[rows]``) of in-range values."""
    inputs = [
        {"name": f.name, "shape": [rows], "datatype": f.v2_datatype, "data": [_value(f)] * rows} for f in spec.features
    ]
    return {"id": "rollout-smoke", "inputs": inputs}


def judge(spec: FeatureSpec, version: str | None, status: int, body: Any, rows: int = 2) -> list[str]:
    """What is wrong with an infer answer (empty: it passes)."""
    if status != 200:
        return [f"infer answered {status}: {str(body)[:300]}"]
    if not isinstance(body, dict):
        return [f"infer answered no JSON object: {str(body)[:300]}"]
    problems = []
    if version is not None and str(body.get("model_version")) != version:
        problems.append(f"answer is from version {body.get('model_version')!r}, expected {version!r}")
    outputs = {o.get("name"): o for o in body.get("outputs") or [] if isinstance(o, dict)}
    for name, _ in spec.outputs:
        data = (outputs.get(name) or {}).get("data")
        if not isinstance(data, list) or len(data) != rows:
            problems.append(f"output {name!r}: {rows} values expected, got {data!r}")
        elif any(isinstance(v, float) and not math.isfinite(v) for v in data):
            problems.append(f"output {name!r} is not finite: {data}")
    return problems


def smoke_test(url: str, spec: FeatureSpec, version: str | None, timeout_s: float = 10.0) -> list[str]:
    """Run the smoke test against ``url`` (the new version's own endpoint); the problems found."""
    import httpx

    base = f"{url.rstrip('/')}/v2/models/{spec.name}"
    try:
        ready = httpx.get(f"{base}/ready", timeout=timeout_s)
        if ready.status_code != 200:
            return [f"{base}/ready answered {ready.status_code}"]
        answer = httpx.post(f"{base}/infer", json=smoke_request(spec), timeout=timeout_s)
    except httpx.HTTPError as e:
        return [f"{base}: {type(e).__name__}: {e}"]
    try:
        body: Any = answer.json()
    except ValueError:
        body = answer.text
    return judge(spec, version, answer.status_code, body)
