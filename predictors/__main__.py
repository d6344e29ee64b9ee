"""``python -m predictors``: start the KServe ModelServer with one or all ConstructOS models.

The same command runs in an InferenceService container, e.g.
``python -m predictors --model_name=credit_risk --model_uri=models:/credit_risk@champion``.
Every KServe ModelServer flag (``--http_port``, ``--workers``, …) is accepted too.
"""

from __future__ import annotations

import argparse
import copy
import logging

from kserve import model_server

from predictors.observability.inference_log import InferenceLog
from predictors.runtime.registry import model_names, predictor_class
from predictors.server import serve
from predictors.settings import INFERENCE_LOG_TOPIC, ServingSettings


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m predictors", parents=[model_server.parser], conflict_handler="resolve"
    )
    parser.add_argument(
        "--model_name",
        default="all",
        choices=[*model_names(), "all"],
        help="the model to serve, or 'all' (default)",
    )
    parser.add_argument(
        "--model_uri",
        default=None,
        help="MLflow URI (models:/<name>@<alias>, models:/<name>/<version>) or local MLflow model directory; "
        "only with a single --model_name (default: CONSTRUCTOS_MODEL_URI_TEMPLATE)",
    )
    parser.add_argument("--max_batch", type=int, default=None, help="largest batch one request may carry (rows)")
    parser.add_argument("--no_onnx", action="store_true", help="score with scikit-learn instead of ONNX Runtime")
    parser.add_argument("--shadow_uri", default=None, help="shadow mode: also score this version (single model only)")
    parser.add_argument("--inference_log", action="store_true", help="publish scored requests to Kafka")
    args, _ = parser.parse_known_args(argv)
    if (args.model_uri or args.shadow_uri) and args.model_name == "all":
        parser.error("--model_uri and --shadow_uri need a single --model_name")
    return args


def configure_logging(log_config_file: str | None, access_log: bool = False) -> None:
    """KServe's logging (format, KSERVE_LOGLEVEL), with our own loggers beside ``kserve``'s, and
    uvicorn's access log only if asked for (``ServingSettings.access_log``).

    A root handler would make KServe skip its configuration and log every request twice more
    through ``kserve.trace`` — a third of a 1-row request's cost.
    """
    from kserve.logging import KSERVE_LOG_CONFIG
    from kserve.logging import configure_logging as kserve_configure

    if log_config_file:
        kserve_configure(log_config_file)
        return
    config = copy.deepcopy(KSERVE_LOG_CONFIG)
    config["loggers"]["predictors"] = dict(config["loggers"]["kserve"])
    if not access_log:
        config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    kserve_configure(config)


def use_store(uri: str) -> None:
    """``models:/`` URIs resolve against the platform's store (as the pipelines do), not ./mlflow.db."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    logging.getLogger("predictors").info("MLflow store: %s", uri)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    flags = {
        "max_batch": args.max_batch,
        "use_onnx": False if args.no_onnx else None,
        "shadow_uri_template": args.shadow_uri,
        "inference_log": True if args.inference_log else None,
    }
    overrides = {key: value for key, value in flags.items() if value is not None}  # flags beat the environment
    settings = ServingSettings(**overrides)
    configure_logging(args.log_config_file, settings.access_log)
    use_store(settings.tracking_uri)
    names = list(model_names()) if args.model_name == "all" else [args.model_name]
    log = InferenceLog(settings, INFERENCE_LOG_TOPIC, settings.inference_log_queue) if settings.inference_log else None
    models = [predictor_class(name)(args.model_uri, settings=settings, inference_log=log) for name in names]
    serve(
        models,
        settings,
        grpc_port=args.grpc_port if args.enable_grpc else None,
        http_port=args.http_port,
        workers=args.workers,
    )


if __name__ == "__main__":
    main()
