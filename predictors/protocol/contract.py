"""``GET /api/v1/models/<model>/contract``: a model's feature contract as JSON Schema.

Generated from the feature spec, so client teams (the Django services) can validate a row before
calling: one object per row (a V1 ``instance``), each feature with its JSON type, range or
categories, description, and whether it may be left out (then the model imputes it). Extensions
(``x-...``) carry what JSON Schema has no word for: the V2 datatype, the imputation, the
query-string aliases, the monotone effect, and the PII fields the platform refuses.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from kserve.protocol.dataplane import DataPlane

from feature_specs import Feature, FeatureSpec
from predictors.protocol.errors import ServingError

ROUTE = "/api/v1/models/{model_name}/contract"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
_JSON_TYPE = {"float": "number", "int": "integer", "category": "string", "bool": "boolean"}


def feature_schema(f: Feature) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _JSON_TYPE[f.dtype], "description": f.description}
    if f.min is not None:
        schema["minimum"] = f.min
    if f.max is not None:
        schema["maximum"] = f.max
    if f.categories and not f.allow_unknown:
        schema["enum"] = list(f.categories)
    elif f.categories:
        schema["x-known-categories"] = list(f.categories)  # others are accepted, scored as "unknown"
    if f.optional:
        schema["type"] = [schema["type"], "null"]  # null or absent: imputed
        if "enum" in schema:
            schema["enum"].append(None)
        schema["x-impute"] = "training median" if f.impute == "median" else f.impute
    schema["x-v2-datatype"] = f.v2_datatype
    if f.aliases:
        schema["x-query-aliases"] = list(f.aliases)
    if f.monotone:
        schema["x-monotone"] = f.monotone
    return schema


def contract(spec: FeatureSpec) -> dict[str, Any]:
    """The JSON Schema of one row of ``spec``'s model."""
    return {
        "$schema": DIALECT,
        "$id": ROUTE.format(model_name=spec.name),
        "title": f"{spec.name} {spec.version}: features of one row",
        "description": spec.description,
        "type": "object",
        "properties": {f.name: feature_schema(f) for f in spec.features},
        "required": [f.name for f in spec.features if not f.optional],
        "additionalProperties": False,  # unknown fields, PII included, are refused with a 400
        "x-spec-version": spec.version,
        "x-task": spec.task,
        "x-max-batch": spec.max_batch,
        "x-pii-refused": spec.pii_names,
    }


def register(app: FastAPI, dataplane: DataPlane) -> None:
    """Add the contract route; an unknown model name is KServe's 404."""

    async def model_contract(model_name: str) -> dict[str, Any]:
        model = dataplane.get_model_from_registry(model_name)
        spec = getattr(model, "spec", None)
        if not isinstance(spec, FeatureSpec):
            raise ServingError(f"model {model_name} has no feature contract", 404)
        outputs = [{"name": o["name"], "datatype": o["datatype"]} for o in model.get_output_types()]
        return contract(spec) | {"x-outputs": outputs}

    app.add_api_route(ROUTE, model_contract, methods=["GET"], tags=["ConstructOS"])
