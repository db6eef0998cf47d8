"""The OpenAPI description of ``POST /predict``: request schema per model column and the
response models."""

from __future__ import annotations

from typing import Any

from .model import ModelSpec


def openapi_request(spec: ModelSpec, max_text_chars: int) -> dict[str, Any]:
    multipart: dict[str, Any] = {}
    as_json: dict[str, Any] = {}
    for col in spec.columns:
        kind = spec.kinds[col]
        if kind in ("image", "audio"):
            formats = "PNG, JPEG, ..." if kind == "image" else "WAV, FLAC, OGG"
            multipart[col] = {"type": "string", "format": "binary",
                              "description": f"{kind} file ({formats}); the field given several "
                                             f"times: one cell of several files, pooled"}
            as_json[col] = {"type": "string", "contentEncoding": "base64",
                            "description": f"{kind} file, base64 or a base64 data: URI (a "
                                           f"list of them: one cell of several files, "
                                           f"pooled)"}
        elif kind == "text":
            multipart[col] = as_json[col] = {"type": "string", "maxLength": max_text_chars}
        else:
            vector = {"type": "array", "items": {"type": "number"},
                      "description": "pre-extracted feature vector"}
            if spec.dims[col]:
                vector.update(minItems=spec.dims[col], maxItems=spec.dims[col])
            as_json[col] = vector
            multipart[col] = {"type": "string", "description": "feature vector as a JSON array"}
    for alias, col in spec.aliases.items():  # the training manifest's name of a column
        note = f"the same as {col!r} (the column the model was trained on)"
        multipart[alias] = {**multipart[col], "description": note}
        as_json[alias] = {**as_json[col], "description": note}
    description = (f"Any subset of the fields {spec.columns}; at least one that the model "
                   f"uses ({spec.used}).")
    return {"requestBody": {"required": True, "description": description, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": multipart,
                                           "additionalProperties": False}},
        "application/json": {"schema": {"type": "object", "properties": as_json,
                                        "additionalProperties": False}},
    }}}


def response_models() -> tuple[Any, Any]:
    from pydantic import BaseModel

    class PredictResponse(BaseModel):
        label: Any
        probabilities: dict[str, float]
        modalities_used: list[str]
        modality_weights: dict[str, float] | None
        ignored_fields: list[str]
        set: list[Any] | None = None  # the conformal prediction set (coverage models)

    class ErrorDetail(BaseModel):
        code: str
        message: str
        field: str | None = None

    class ErrorResponse(BaseModel):
        error: ErrorDetail

    return PredictResponse, ErrorResponse
