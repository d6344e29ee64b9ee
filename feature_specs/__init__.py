"""Data contracts of the ConstructOS models and the code that applies them."""

from feature_specs.spec import SPEC_NAMES, Feature, FeatureSpec, SpecError, load_spec, parse_spec
from feature_specs.validation import InvalidFeature, Validator

__all__ = [
    "SPEC_NAMES",
    "Feature",
    "FeatureSpec",
    "InvalidFeature",
    "SpecError",
    "Validator",
    "load_spec",
    "parse_spec",
]
