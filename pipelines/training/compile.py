"""Compile the training pipeline to KFP IR YAML: one file per model (its name as the default; the
spec supplies the estimator parameters and the search space, and ``hyperparameters`` set in the
UI override both) plus the generic ``training.yaml``; upload any of them in the KFP UI.

    python -m pipelines.training.compile [--out build/pipelines]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from feature_specs.spec import load_spec, spec_names


def pipeline_name(model: str) -> str:
    return f"{model.replace('_', '-')}-training"


def compile_all(out: Path) -> list[Path]:
    from kfp import compiler

    from pipelines.training.pipeline import training_pipeline

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generic = out / "training.yaml"
        compiler.Compiler().compile(training_pipeline, str(generic))
        written.append(generic)
        for model in spec_names():
            path = out / f"{model}.yaml"
            load_spec(model)  # every spec must load before its pipeline is written
            defaults = {"model": model}
            compiler.Compiler().compile(
                training_pipeline, str(path), pipeline_name=pipeline_name(model), pipeline_parameters=defaults
            )
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.training.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/pipelines"))
    args = parser.parse_args(argv)
    for path in compile_all(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
