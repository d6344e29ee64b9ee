"""The typed, checked objects a spec file loads into (pydantic, frozen, unknown keys refused):
:class:`FeatureSpec` and its parts. :mod:`feature_specs.loader` reads the files."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
TOPIC_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,200}$"  # lower case: a Kubernetes name once "." and "_" become "-"

DType = Literal["float", "int", "category", "bool"]
#: V2 (Open Inference Protocol) datatype of each spec dtype.
V2_DATATYPE: dict[str, str] = {"float": "FP64", "int": "INT64", "category": "BYTES", "bool": "BOOL"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
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


class DerivedFeature(_Strict):
    """A model input computed from the spec's numeric features inside the shared transform (so
    training and serving compute it the same way), never sent by a client: the row mean of
    ``mean_of``, a missing value left out (e.g. the mean of the recorded demand lags), or with
    ``log1p`` the row mean of their ``log1p`` (the log of a geometric mean)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str
    mean_of: tuple[str, ...] = Field(min_length=2)
    #: the mean of ``log1p`` of the values instead of the values (non-negative features only).
    log1p: bool = False
    #: expected direction of the effect on the target, enforced at training like a feature's.
    monotone: Literal["increasing", "decreasing"] | None = None

    @model_validator(mode="after")
    def _distinct(self) -> DerivedFeature:
        if len(set(self.mean_of)) != len(self.mean_of):
            raise ValueError("'mean_of' names a feature twice")
        return self


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
    #: the search stops after this many trials or ``timeout_s`` seconds from the tune step's start
    #: (reading the rows included), whichever comes first (reproducible for a seed when the trial
    #: count ends it).
    trials: int = Field(default=20, gt=0)
    timeout_s: float = Field(default=45.0, gt=0)
    folds: int = Field(default=3, ge=2)
    #: the search runs on a stratified sample of at most this many training rows (the final fit
    #: uses all of them).
    max_rows: int = Field(default=30_000, ge=100)


class Estimator(_Strict):
    """The scikit-learn estimator trained on top of the shared transform, and its defaults."""

    kind: Literal["hist_gradient_boosting"] = "hist_gradient_boosting"
    params: dict[str, Any] = Field(default_factory=dict)
    #: regression: fit on ``log1p(target)`` and answer ``expm1`` of the prediction — effects that
    #: multiply (a level times a season) add up in logs, where trees fit them with fewer splits.
    target_transform: Literal["log1p"] | None = None
    #: regression: a derived feature the forecast is relative to — the trees fit the (transformed)
    #: target minus it and the model answers their prediction plus it, so the trees learn only how
    #: the target departs from that baseline (e.g. the lags' log mean with a log1p target).
    offset: str | None = None
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


class Environment(_Strict):
    """This model's serving settings in one overlay (dev, staging, prod); unset: the overlay's default."""

    canary_percent: int | None = Field(default=None, ge=0, le=100)
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)


class Rollout(_Strict):
    #: traffic share of a new version (the challenger) when its canary starts.
    canary_percent: int = Field(default=10, ge=0, le=100)
    #: per overlay, e.g. ``{prod: {canary_percent: 5, min_replicas: 2}}``; rendered by ``make manifests``.
    environments: dict[str, Environment] = Field(default_factory=dict)


class FeatureSpec(_Strict):
    name: str
    version: str
    task: Literal["binary_classification", "regression"]
    description: str
    owner: str
    #: Kafka topic of the model's events (its dead letters go to ``<source_topic>.dlq``).
    source_topic: str = Field(pattern=TOPIC_PATTERN)
    #: Kafka topic of the ground truth (outcomes joined to predictions for live accuracy).
    outcome_topic: str = Field(pattern=TOPIC_PATTERN)
    features: tuple[Feature, ...]
    #: inputs computed from the features by the shared transform (after the features' columns).
    derived: tuple[DerivedFeature, ...] = ()
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
        derived = [d.name for d in self.derived]
        everything = names + aliases + derived + [p.name for p in self.pii] + [self.target.name]
        dupes = sorted({n for n in everything if everything.count(n) > 1})
        if dupes:
            raise ValueError(f"names used twice: {', '.join(dupes)}")
        numeric = {f.name for f in self.features if f.numeric}
        for d in self.derived:
            unknown = [n for n in d.mean_of if n not in numeric]
            if unknown:
                raise ValueError(f"derived '{d.name}': not numeric features of this spec: {', '.join(unknown)}")
            lows = {n: self.feature(n).min for n in d.mean_of}
            negative = [n for n, low in lows.items() if d.log1p and (low is None or low < 0)]
            if negative:
                raise ValueError(f"derived '{d.name}': log1p needs features with min >= 0: {', '.join(negative)}")
        self._check_offset()
        if self.source_topic == self.outcome_topic:
            raise ValueError("source_topic and outcome_topic must differ")
        if self.task == "binary_classification" and self.target.dtype != "bool":
            raise ValueError("a binary_classification target must have dtype bool")
        if self.task != "regression" and self.estimator.target_transform is not None:
            raise ValueError("estimator.target_transform is only for regression")
        if self.estimator.target_transform == "log1p" and (self.target.min is None or self.target.min < 0):
            raise ValueError("estimator.target_transform log1p needs a target with min >= 0")
        return self

    def _check_offset(self) -> None:
        """``estimator.offset`` names a derived feature on the scale the trees fit (log1p or not)
        that a valid request always has (one of its features required)."""
        name = self.estimator.offset
        if name is None:
            return
        derived = {d.name: d for d in self.derived}.get(name)
        if derived is None:
            raise ValueError(f"estimator.offset '{name}' is not a derived feature of this spec")
        if self.task != "regression":
            raise ValueError("estimator.offset is only for regression")
        if derived.log1p != (self.estimator.target_transform == "log1p"):
            raise ValueError(f"estimator.offset '{name}': a log1p derived feature goes with target_transform log1p")
        if all(self.feature(n).optional for n in derived.mean_of):
            raise ValueError(f"estimator.offset '{name}': needs a feature that is not optional (never missing)")
        if any(self.feature(n).monotone == "decreasing" for n in derived.mean_of):
            raise ValueError(f"estimator.offset '{name}': rises with its features, none may be monotone decreasing")

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
