"""Spec files: discovered by name (``<model>.yaml`` in :func:`spec_dirs`), parsed and checked into a
:class:`~feature_specs.schema.FeatureSpec`; a problem is one :class:`SpecError` line naming the file
and the entry, which :func:`install_excepthook` prints instead of a traceback."""

from __future__ import annotations

import os
import re
import sys
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from pydantic import ValidationError

from feature_specs.schema import NAME_PATTERN, FeatureSpec

SPEC_DIR = Path(__file__).parent
#: Extra folders of spec files (``os.pathsep``-separated), searched before the built-in one.
SPEC_PATH_ENV = "CONSTRUCTOS_SPEC_PATH"


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
