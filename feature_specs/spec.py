"""The data contract of a model: a YAML file per model, loaded into typed, checked objects.

A spec is the one source of truth for validation (serving and the Kafka trigger), the V2
metadata, the training transform, the great-expectations suite, the promotion gate and drift
monitoring. It depends on nothing else in the project.

Its parts live in :mod:`feature_specs.schema` (the typed objects) and :mod:`feature_specs.loader`
(spec files, their errors). Every public name stays importable from here, as before the split:
``feature_specs.spec`` is the path code, YAML tooling and saved artefacts have referenced.
"""

# Re-exports, on purpose: pickled or saved objects and YAML tooling may name these classes by
# their old dotted path ``feature_specs.spec.<Name>``; keep every public name importable here.
from feature_specs.loader import (
    SPEC_DIR,
    SPEC_PATH_ENV,
    SpecError,
    install_excepthook,
    load_spec,
    load_specs,
    parse_spec,
    spec_dirs,
    spec_names,
    spec_paths,
)
from feature_specs.schema import (
    NAME_PATTERN,
    TOPIC_PATTERN,
    V2_DATATYPE,
    DerivedFeature,
    Drift,
    DType,
    Environment,
    Estimator,
    Feature,
    FeatureSpec,
    Gate,
    PiiField,
    Retrain,
    Rollout,
    Search,
    SearchRange,
    Target,
)

__all__ = [
    "NAME_PATTERN",
    "SPEC_DIR",
    "SPEC_PATH_ENV",
    "TOPIC_PATTERN",
    "V2_DATATYPE",
    "DType",
    "DerivedFeature",
    "Drift",
    "Environment",
    "Estimator",
    "Feature",
    "FeatureSpec",
    "Gate",
    "PiiField",
    "Retrain",
    "Rollout",
    "Search",
    "SearchRange",
    "SpecError",
    "Target",
    "install_excepthook",
    "load_spec",
    "load_specs",
    "parse_spec",
    "spec_dirs",
    "spec_names",
    "spec_paths",
]
