"""Data contracts of the ConstructOS models and the code that applies them."""

from feature_specs.spec import (
    Feature,
    FeatureSpec,
    SpecError,
    load_spec,
    load_specs,
    parse_spec,
    spec_names,
    spec_paths,
)
from feature_specs.validation import InvalidFeature, Validator

__all__ = [
    "Feature",
    "FeatureSpec",
    "InvalidFeature",
    "SpecError",
    "Validator",
    "load_spec",
    "load_specs",
    "parse_spec",
    "spec_names",
    "spec_paths",
]
