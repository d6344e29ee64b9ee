"""The data contract of a model: a YAML file per model, loaded into typed, checked objects.

A spec is the one source of truth for validation (serving and the Kafka trigger), the V2
metadata, the training transform, the great-expectations suite, the promotion gate and drift
monitoring. It depends on nothing else in the project.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SPEC_DIR = Path(__file__).parent
SPEC_NAMES: tuple[str, ...] = ("credit_risk", "stock_demand", "lead_score")

DType = Literal["float", "int", "category", "bool"]
#: V2 (Open Inference Protocol) datatype of each spec dtype.
V2_DATATYPE: dict[str, str] = {"float": "FP64", "int": "INT64", "category": "BYTES", "bool": "BOOL"}


class SpecError(ValueError):
    """A spec file that is missing or malformed; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    dtype: DType
    description: str
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    #: optional features may be absent or null; they are imputed (see ``impute``).
    optional: bool = False
    #: numbers: "median" (learned at training) or a constant; categories/bools: a constant.
    impute: str | float | bool | None = None
    #: accept values outside ``categories`` (encoded as "unknown") instead of refusing them.
    allow_unknown: bool = False
    #: expected direction of the effect on the target, enforced at training and tested.
    monotone: Literal["increasing", "decreasing"] | None = None
    #: other names accepted in query strings, e.g. ``value`` for ``opportunity_value``.
    aliases: tuple[str, ...] = ()
    #: this feature is the target's own value this many periods back (e.g. last week's demand):
    #: evaluate scores a naive last-value forecast from the smallest such lag as a baseline.
    target_lag: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.dtype == "category" and not self.categories:
            raise ValueError("a category feature needs 'categories'")
        if self.dtype != "category" and self.categories:
            raise ValueError("'categories' is only for category features")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("'min' is greater than 'max'")
        if self.optional and self.impute is None:
            raise ValueError("an optional feature needs 'impute'")
        if self.impute == "median" and self.dtype not in ("float", "int"):
            raise ValueError("'median' imputation is only for numbers")
        if self.monotone and self.dtype == "category":
            raise ValueError("'monotone' is only for numbers and bools")
        return self

    @property
    def v2_datatype(self) -> str:
        return V2_DATATYPE[self.dtype]

    @property
    def numeric(self) -> bool:
        return self.dtype != "category"


class PiiField(_Strict):
    """A field the source service may send that identifies a person or company: never stored."""

    name: str
    description: str


class Target(_Strict):
    name: str
    dtype: Literal["bool", "float"]
    description: str
    min: float | None = None
    max: float | None = None


class SearchRange(_Strict):
    """One hyperparameter's search range: ``[low, high]`` or ``[low, high, log]`` in YAML (integers
    when both bounds are), or ``{choices: [...]}``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, raw: Any) -> Any:
        if not isinstance(raw, list | tuple):
            return raw
        if len(raw) not in (2, 3) or (len(raw) == 3 and raw[2] != "log"):
            raise ValueError("expected [low, high] or [low, high, log]")
        low, high = raw[0], raw[1]
        return {"low": low, "high": high, "log": len(raw) == 3, "integer": all(isinstance(v, int) for v in (low, high))}

    @model_validator(mode="after")
    def _bounds(self) -> SearchRange:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either 'choices' (not empty) or a range")
            return self
        if self.low is None or self.high is None or self.low >= self.high:
            raise ValueError("a range needs low < high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class Search(_Strict):
    """Hyperparameter search of the tune step: cross-validation on the training split only."""

    params: dict[str, SearchRange] = Field(min_length=1)
    #: the search stops after this many trials or ``timeout_s`` seconds, whichever comes first
    #: (reproducible for a seed when the trial count ends it).
    trials: int = Field(default=20, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    folds: int = Field(default=3, ge=2)
    #: the search runs on a stratified sample of at most this many training rows (the final fit
    #: uses all of them).
    max_rows: int = Field(default=30_000, ge=100)


class Estimator(_Strict):
    """The scikit-learn estimator trained on top of the shared transform, and its defaults."""

    kind: Literal["hist_gradient_boosting"] = "hist_gradient_boosting"
    params: dict[str, Any] = Field(default_factory=dict)
    #: hyperparameter search space (none: train with ``params`` as they are).
    search: Search | None = None
    #: classifiers: probability calibrations to try on cross-validated scores of the training
    #: split; the one with the lowest Brier score is kept (none if calibrating does not lower it).
    calibration: tuple[Literal["sigmoid", "isotonic"], ...] = ("sigmoid", "isotonic")


class Gate(_Strict):
    """Promotion gate: absolute floors/ceilings AND no worse than the champion by ``tolerance``."""

    primary_metric: str
    greater_is_better: bool
    floors: dict[str, float] = Field(default_factory=dict)
    ceilings: dict[str, float] = Field(default_factory=dict)
    tolerance: float = 0.01
    #: classifiers: the score at or above which the label is positive.
    threshold: float = 0.5


class Retrain(_Strict):
    min_new_rows: int = Field(gt=0)
    min_rows: int = Field(default=500, gt=0)


class Drift(_Strict):
    psi_threshold: float = Field(default=0.2, gt=0)
    #: Jensen-Shannon distance (base 2, 0..1) for categories.
    js_threshold: float = Field(default=0.1, gt=0, le=1)
    bins: int = Field(default=10, ge=2)
    window: int = Field(default=500, gt=0)
    #: features that must drift together before a retrain is requested.
    min_drifted_features: int = Field(default=1, ge=1)


class Rollout(_Strict):
    canary_percent: int = Field(default=10, ge=0, le=100)


class FeatureSpec(_Strict):
    name: str
    version: str
    task: Literal["binary_classification", "regression"]
    description: str
    owner: str
    source_topic: str
    outcome_topic: str
    features: tuple[Feature, ...]
    pii: tuple[PiiField, ...] = ()
    target: Target
    estimator: Estimator = Estimator()
    gate: Gate
    retrain: Retrain
    drift: Drift = Drift()
    rollout: Rollout = Rollout()
    max_batch: int = Field(default=1000, gt=0)

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureSpec:
        names = [f.name for f in self.features]
        aliases = [a for f in self.features for a in f.aliases]
        everything = names + aliases + [p.name for p in self.pii] + [self.target.name]
        dupes = sorted({n for n in everything if everything.count(n) > 1})
        if dupes:
            raise ValueError(f"names used twice: {', '.join(dupes)}")
        if self.task == "binary_classification" and self.target.dtype != "bool":
            raise ValueError("a binary_classification target must have dtype bool")
        return self

    @property
    def is_classifier(self) -> bool:
        return self.task == "binary_classification"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def pii_names(self) -> list[str]:
        return [p.name for p in self.pii]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name or name in f.aliases:
                return f
        raise KeyError(name)

    @property
    def outputs(self) -> list[tuple[str, str]]:
        """Named V2 outputs with their datatypes."""
        if self.is_classifier:
            return [("probability", "FP64"), ("label", "BOOL")]
        return [("prediction", "FP64")]


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_spec(path: Path) -> FeatureSpec:
    """Load and check one spec file; a problem raises SpecError naming the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    try:
        spec = FeatureSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{path}: invalid spec\n{_describe(exc)}") from exc
    if spec.name != path.stem:
        raise SpecError(f"{path}: name: '{spec.name}' does not match the file name")
    return spec


@cache
def load_spec(name: str) -> FeatureSpec:
    """The spec of a model by name, e.g. ``load_spec("credit_risk")``."""
    if name not in SPEC_NAMES:
        raise SpecError(f"unknown model '{name}'; known: {', '.join(SPEC_NAMES)}")
    return parse_spec(SPEC_DIR / f"{name}.yaml")
