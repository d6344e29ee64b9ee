"""The data contract of a model: a YAML file per model, loaded into typed, checked objects.

A spec is the one source of truth for validation (serving and the Kafka trigger), the V2
metadata, the training transform, the great-expectations suite, the promotion gate and drift
monitoring. It depends on nothing else in the project.
"""

from __future__ import annotations

import os
import re
import sys
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SPEC_DIR = Path(__file__).parent
#: Extra folders of spec files (``os.pathsep``-separated), searched before the built-in one.
SPEC_PATH_ENV = "CONSTRUCTOS_SPEC_PATH"
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
TOPIC_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,200}$"  # lower case: a Kubernetes name once "." and "_" become "-"

DType = Literal["float", "int", "category", "bool"]
#: V2 (Open Inference Protocol) datatype of each spec dtype.
V2_DATATYPE: dict[str, str] = {"float": "FP64", "int": "INT64", "category": "BYTES", "bool": "BOOL"}


class SpecError(ValueError):
    """A spec file that is missing or malformed. The message is one line naming the file, the entry
    and the likely cause (``<file>:<line>:<column>: ...`` for YAML syntax); a command that meets
    one uncaught prints just that line (:func:`install_excepthook`), not a traceback."""


def install_excepthook() -> None:
    """Make an uncaught :class:`SpecError` end a command with its one line (``error: ...``) and
    exit status 2; every other exception keeps the hook it had."""
    previous = sys.excepthook
    if getattr(previous, "spec_errors", False):
        return

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if isinstance(value, SpecError):
            sys.stdout.flush()
            print(f"error: {value}", file=sys.stderr)
            sys.stderr.flush()
            os._exit(2)
        previous(kind, value, tb)

    hook.spec_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook


#: likely causes of common YAML syntax errors, by the parser's words.
_YAML_CAUSES = {
    "mapping values are not allowed": "a ':' inside an unquoted value (quote it), or inconsistent indentation?",
    "expected <block end>": "inconsistent indentation?",
    "found character '\\t'": "a tab: indent with spaces",
    "did not find expected key": "inconsistent indentation, or a '-' missing before a list item?",
    "did not find expected ',' or ']'": "an unclosed '['?",
    "did not find expected ',' or '}'": "an unclosed '{'?",
    "found undefined alias": "a '*' at the start of an unquoted value? quote it",
    "found duplicate anchor": "an '&' at the start of an unquoted value? quote it",
}


def _yaml_error(path: Path, exc: yaml.YAMLError) -> SpecError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    cause = next((c for words, c in _YAML_CAUSES.items() if words in problem), "")
    return SpecError(f"{where}: not valid YAML: {problem}" + (f" ({cause})" if cause else ""))


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
        if self.source_topic == self.outcome_topic:
            raise ValueError("source_topic and outcome_topic must differ")
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


def _describe(err: ValidationError, raw: dict[str, Any]) -> str:
    """Pydantic's errors as ``<entry>: <problem>``, ``; ``-joined; a list item is named by its
    ``name`` when it has one (``features[2] 'age'.dtype``)."""
    found = []
    for e in err.errors():
        parts: list[str] = []
        node: Any = raw
        for p in e["loc"]:
            if isinstance(p, int) and parts:
                named = (
                    node[p].get("name")
                    if isinstance(node, list) and p < len(node) and isinstance(node[p], dict)
                    else None
                )
                parts[-1] += f"[{p}]" + (f" '{named}'" if isinstance(named, str) else "")
            else:
                parts.append(str(p))
            if isinstance(node, dict):
                node = node.get(p)
            else:
                node = node[p] if isinstance(node, list) and isinstance(p, int) and 0 <= p < len(node) else None
        problem = e["msg"].removeprefix("Value error, ")
        found.append(f"{'.'.join(parts) or '(top level)'}: {problem}")
    return "; ".join(found)


def parse_spec(path: Path) -> FeatureSpec:
    """Load and check one spec file; a problem raises SpecError naming the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    try:
        spec = FeatureSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{path}: invalid spec: {_describe(exc, raw)}") from None
    if spec.name != path.stem:
        raise SpecError(f"{path}: name: '{spec.name}' does not match the file name")
    return spec


def spec_dirs() -> list[Path]:
    """Where spec files are found: ``$CONSTRUCTOS_SPEC_PATH`` folders first, then this package."""
    extra = [Path(p) for p in os.environ.get(SPEC_PATH_ENV, "").split(os.pathsep) if p]
    return [*extra, SPEC_DIR]


def spec_paths() -> dict[str, Path]:
    """Every discovered spec file by model name: ``<name>.yaml`` in :func:`spec_dirs`.

    Discovery, not a list: dropping a YAML file into ``feature_specs/`` adds a model.
    """
    found: dict[str, Path] = {}
    for folder in spec_dirs():
        for path in sorted(folder.glob("*.yaml")):
            if not re.fullmatch(NAME_PATTERN, path.stem):
                raise SpecError(f"{path}: name: file names are model names: lower case, digits and '_'")
            if path.stem in found:
                raise SpecError(f"{path}: name: model '{path.stem}' is already defined by {found[path.stem]}")
            found[path.stem] = path
    return found


def spec_names() -> tuple[str, ...]:
    """The discovered model names, sorted."""
    return tuple(sorted(spec_paths()))


@cache
def _parse_cached(path: Path, mtime_ns: int) -> FeatureSpec:
    return parse_spec(path)


def load_spec(name: str) -> FeatureSpec:
    """The spec of a model by name, e.g. ``load_spec("credit_risk")``."""
    paths = spec_paths()
    if name not in paths:
        raise SpecError(f"unknown model '{name}'; known: {', '.join(sorted(paths)) or 'none'}")
    path = paths[name]
    return _parse_cached(path, path.stat().st_mtime_ns)


def load_specs() -> dict[str, FeatureSpec]:
    """Every discovered spec, checked one by one and against each other (topics are unique)."""
    specs = {name: load_spec(name) for name in spec_names()}
    owners: dict[str, str] = {}
    for name, spec in specs.items():
        for field in ("source_topic", "outcome_topic"):
            topic = getattr(spec, field)
            if topic in owners and owners[topic] != name:
                raise SpecError(f"{spec_paths()[name]}: {field}: topic '{topic}' is already used by {owners[topic]}")
            owners[topic] = name
    return specs
