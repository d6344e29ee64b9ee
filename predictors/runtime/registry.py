"""The predictor class of each model, found by convention rather than listed.

Every discovered spec (``feature_specs/<name>.yaml``) is a model. Its predictor is the
:class:`SpecModel` subclass in ``predictors/<name>.py`` when that module exists (it only adds
outputs, see :meth:`SpecModel.extra_outputs`), else the plain :class:`SpecModel` for that spec.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from functools import cache

from feature_specs import load_spec, spec_names
from predictors.runtime.spec_model import SpecModel


def model_names() -> tuple[str, ...]:
    """Every servable model: the discovered specs."""
    return spec_names()


@cache
def _predictor_class(name: str) -> type[SpecModel]:
    module_name = f"predictors.{name}"  # the model modules sit at the top of the package
    if importlib.util.find_spec(module_name) is None:
        return type(f"{name.title().replace('_', '')}Model", (SpecModel,), {"spec_name": name, "__module__": __name__})
    module = importlib.import_module(module_name)
    found = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, SpecModel) and cls is not SpecModel and getattr(cls, "spec_name", None) == name
    ]
    if len(found) != 1:
        raise TypeError(
            f"{module.__file__}: expected one SpecModel subclass with spec_name = {name!r}, found {len(found)}"
        )
    return found[0]


def predictor_class(name: str) -> type[SpecModel]:
    """The predictor of model ``name`` (an unknown name raises ``SpecError`` listing the known ones)."""
    load_spec(name)  # unknown or broken spec: a clear error naming the file and field
    return _predictor_class(name)
