"""Data contracts of the ConstructOS models and the code that applies them.

Importing this package makes every command that meets a malformed spec end with its one-line
message, not a traceback (:func:`~feature_specs.spec.install_excepthook`).
"""

from feature_specs.spec import (
    Feature,
    FeatureSpec,
    SpecError,
    install_excepthook,
    load_spec,
    load_specs,
    parse_spec,
    spec_names,
    spec_paths,
)
from feature_specs.validation import InvalidFeature, Validator

install_excepthook()

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
