"""Request bodies of ``POST /predict``: reading them bounded, parsing multipart, form
and JSON bodies in memory, and checking every field against the model (a bad one is an
:class:`ApiError`, a 4xx answer with a JSON body)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
import math
from typing import Any

import numpy as np

from .errors import ApiError
from .model import ModelSpec

# Extra bytes a request body may hold beyond its fields (multipart headers, JSON syntax).
_ENVELOPE_BYTES = 64 * 1024
# How much of an oversize body is read (and dropped) so the client gets its 413 cleanly.
_DRAIN_BYTES = 32 * 2**20
MEDIA_TYPES = ("multipart/form-data", "application/json", "application/x-www-form-urlencoded")
_FILE_TYPES = {
    "image": ("image/",),
    "audio": ("audio/", "video/ogg", "application/ogg"),
    "text": ("text/",),
}
_GENERIC_TYPES = ("", "application/octet-stream", "binary/octet-stream")


@dataclass
class Field:
    name: str
    data: bytes | str
    is_file: bool
    content_type: str = ""
    filename: str | None = None


class BodyLimits:
    """Largest acceptable body per content type, from the per-field limits."""

    def __init__(self, spec: ModelSpec, max_upload_bytes: int, max_text_chars: int):
        files = sum(1 for k in spec.kinds.values() if k in ("image", "audio"))
        texts = sum(1 for k in spec.kinds.values() if k == "text")
        features = sum(32 * (d or 4096) for c, d in spec.dims.items()
                       if spec.kinds[c] == "features")
        text_bytes = 4 * max_text_chars  # UTF-8: at most 4 bytes per character
        self.multipart = files * max_upload_bytes + texts * text_bytes + features + _ENVELOPE_BYTES
        # JSON: base64 takes 4/3, and escapes (\uXXXX) up to 6 bytes per character
        self.json = (files * math.ceil(max_upload_bytes * 4 / 3) + texts * 6 * max_text_chars
                     + features + _ENVELOPE_BYTES)
        self.urlencoded = texts * 3 * text_bytes + 3 * features + _ENVELOPE_BYTES
        self.part = max(max_upload_bytes, text_bytes, features) + 1
        self.max_parts = 4 * (len(spec.columns) + sum(
            len(e.input_columns) for e in spec.tables.values())) + 8

    def for_media(self, media: str) -> int:
        if media == "application/json":
            return self.json
        if media == "application/x-www-form-urlencoded":
            return self.urlencoded
        return self.multipart


async def read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = False
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise ApiError(400, "bad_request", f"invalid Content-Length {declared!r}") from None
        if too_big and request.headers.get("expect", "").lower() == "100-continue":
            # the client waits for our go-ahead: refuse without reading anything
            raise _too_large(limit)
    body = bytearray()
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            too_big = True
        if too_big:
            if total > limit + _DRAIN_BYTES:
                break
            continue
        body += chunk
    if too_big:
        raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large",
                    f"the request body exceeds the limit of {limit} bytes for this model")


async def discard_body(request: Any, limit: int) -> None:
    """Read and drop the body (bounded), so a refused client gets its answer cleanly."""
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit + _DRAIN_BYTES:
            break


async def parse_multipart(body: bytes, content_type: str, limits: BodyLimits) -> list[Field]:
    """Parse multipart/form-data with Starlette's parser (python-multipart), in memory."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    parser = MultiPartParser(Headers({"content-type": content_type}), stream(),
                             max_files=limits.max_parts, max_fields=limits.max_parts,
                             max_part_size=limits.part)
    # the whole body is in memory already: files stay there too, never in temporary files
    parser.spool_max_size = limits.multipart + 1
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        status, code = ((413, "field_too_large") if "maximum size" in exc.message
                        else (422, "too_many_fields") if "Too many" in exc.message
                        else (400, "bad_multipart"))
        raise ApiError(status, code, f"malformed or oversize multipart body: {exc.message}"
                       ) from None
    fields = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                ctype = (value.content_type or "").split(";")[0].strip().lower()
                fields.append(Field(name=name, data=await value.read(), is_file=True,
                                     content_type=ctype, filename=value.filename))
            else:
                fields.append(Field(name=name, data=value, is_file=False))
    finally:
        await form.close()
    if not fields:
        raise ApiError(400, "bad_multipart", "the multipart body holds no fields")
    return fields


def parse_urlencoded(body: bytes, n_columns: int) -> list[Field]:
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                          max_num_fields=4 * n_columns + 8)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "bad_form", f"malformed form body: {exc}") from None
    return [Field(name=k, data=v.encode("utf-8"), is_file=False) for k, v in pairs]


def _check_names(names: list[str], spec: ModelSpec, several: tuple[str, ...] = ()) -> None:
    """Known fields, each given once but for the kinds in ``several`` (image and audio
    uploads: a field given several times is a cell of several files, pooled)."""
    unknown = sorted({n for n in names if n not in spec.kinds})
    if unknown:
        raise ApiError(422, "unknown_field",
                       f"unknown field(s) {unknown}; this model takes {spec.columns}",
                       field=unknown[0])
    seen = set()
    for n in names:
        if n in seen and spec.kinds[n] not in several:
            raise ApiError(422, "duplicate_field", f"field {n!r} is given more than once", field=n)
        seen.add(n)


def _add_file(items: dict[str, Any], name: str, data: bytes) -> None:
    """One more file of field ``name``: a second file makes the cell a list of files."""
    if name not in items:
        items[name] = data
    elif isinstance(items[name], list):
        items[name].append(data)
    else:
        items[name] = [items[name], data]


def items_from_fields(fields: list[Field], spec: ModelSpec, max_upload_bytes: int,
                       max_text_chars: int) -> dict[str, Any]:
    """Raw items by column from form fields: bytes for files, str for text; the fields of a
    tabular view (named after its columns) make one row item."""
    table_cols = {c for enc in spec.tables.values() for c in enc.input_columns}
    fields = [replace(f, name=spec.aliases[f.name]) if f.name in spec.aliases else f
              for f in fields]
    cells: dict[str, Any] = {}
    for f in fields:
        if f.name in table_cols:
            if f.name in cells:
                raise ApiError(422, "duplicate_field", f"field {f.name!r} is given more than "
                               f"once", field=f.name)
            data = f.data if isinstance(f.data, str) else f.data.decode("utf-8", "replace")
            cells[f.name] = data if data.strip() else None
    _, tables = _table_items(cells, spec)
    fields = [f for f in fields if f.name not in table_cols]
    _check_names([f.name for f in fields if not (f.is_file and f.name in spec.kinds)],
                 spec)
    _check_names([f.name for f in fields], spec, several=("image", "audio"))
    items: dict[str, Any] = dict(tables)
    for f in fields:
        kind = spec.kinds[f.name]
        data = f.data if isinstance(f.data, bytes) else f.data.encode("utf-8")
        if kind in ("image", "audio"):
            if not f.is_file:
                if not data:
                    continue  # an empty field means "this modality is missing"
                raise ApiError(422, "expected_file",
                               f"field {f.name!r} must be a file upload (e.g. -F "
                               f"{f.name}=@file); strings are never opened as paths",
                               field=f.name)
            _check_file_type(f.name, kind, f.content_type)
            _add_file(items, f.name, _check_bytes(f.name, data, max_upload_bytes))
        elif kind == "text":
            if f.is_file:
                _check_file_type(f.name, "text", f.content_type)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(422, "bad_text", f"field {f.name!r} is not valid UTF-8: {exc}",
                               field=f.name) from None
            items[f.name] = _check_text(f.name, text, max_text_chars)
        else:
            try:
                value = json.loads(data.decode("utf-8")) if data.strip() else None
            except (UnicodeDecodeError, ValueError):
                raise ApiError(422, "bad_features", f"field {f.name!r} must be a JSON array of "
                               f"numbers", field=f.name) from None
            items[f.name] = _check_vector(f.name, value, spec.dims[f.name])
    return {k: v for k, v in items.items() if v is not None}


def items_from_json(body: bytes, spec: ModelSpec, max_upload_bytes: int,
                     max_text_chars: int) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(422, "bad_json", f"expected a JSON object with fields {spec.columns}; "
                       f"got {type(doc).__name__}")
    if not doc:
        raise ApiError(400, "empty_request",
                       f"the JSON object is empty; send at least one of the fields {spec.columns}")
    doc = _canonical_names(doc, spec)
    doc, tables = _table_items(doc, spec)
    _check_names(list(doc), spec)
    items: dict[str, Any] = dict(tables)
    for name, value in doc.items():
        kind = spec.kinds[name]
        if value is None or value == "":
            continue
        if kind in ("image", "audio") and isinstance(value, list) and value:
            # a cell of several files (pooled, as a list cell of a table is)
            items[name] = [_decode_base64(name, kind, v, max_upload_bytes) for v in value]
        elif kind in ("image", "audio"):
            items[name] = _decode_base64(name, kind, value, max_upload_bytes)
        elif kind == "text":
            if not isinstance(value, str):
                raise ApiError(422, "bad_text", f"field {name!r} must be a string; got "
                               f"{type(value).__name__}", field=name)
            items[name] = _check_text(name, value, max_text_chars)
        else:
            items[name] = _check_vector(name, value, spec.dims[name])
    return {k: v for k, v in items.items() if v is not None}


def _canonical_names(doc: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """Fields named after the training manifest's columns, renamed to the model's columns."""
    out: dict[str, Any] = {}
    for name, value in doc.items():
        col = spec.aliases.get(name, name)
        if col in out:
            raise ApiError(422, "duplicate_field", f"fields {name!r} and {col!r} are the same "
                           f"column; give one", field=name)
        out[col] = value
    return out


def _table_items(doc: dict[str, Any], spec: ModelSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields of tabular views (named after their columns) as one row item per view."""
    if not spec.tables:
        return doc, {}
    from .._errors import InputError
    from ..encoders.tabular import gather_fields

    try:
        return gather_fields(doc, spec.tables)
    except InputError as exc:
        raise ApiError(422, "bad_value", str(exc)) from None


def _decode_base64(name: str, kind: str, value: Any, max_upload_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise ApiError(422, "bad_base64", f"field {name!r} must be a base64 string (or a data: "
                       f"URI); got {type(value).__name__}", field=name)
    text = value
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise ApiError(422, "bad_base64", f"field {name!r}: only base64 data: URIs are "
                           f"accepted", field=name)
        _check_file_type(name, kind, head[5:-7].split(";")[0].strip().lower())
    text = "".join(text.split())
    if len(text) * 3 // 4 > max_upload_bytes + 3:
        raise ApiError(413, "file_too_large", f"field {name!r} exceeds the limit of "
                       f"{max_upload_bytes} bytes", field=name)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "bad_base64", f"field {name!r} is not valid base64: {exc}",
                       field=name) from None
    return _check_bytes(name, data, max_upload_bytes)


def _check_file_type(name: str, kind: str, content_type: str) -> None:
    if content_type in _GENERIC_TYPES or content_type.startswith(_FILE_TYPES[kind]):
        return
    expected = " or ".join(t + "*" if t.endswith("/") else t for t in _FILE_TYPES[kind])
    raise ApiError(415, "unsupported_file_type",
                   f"field {name!r} is {kind}, but the upload's content type is {content_type!r}; "
                   f"expected {expected}", field=name)


def _check_bytes(name: str, data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise ApiError(413, "file_too_large", f"field {name!r} has {len(data)} bytes, above the "
                       f"limit of {limit}", field=name)
    if not data:
        raise ApiError(422, "empty_file", f"field {name!r} is an empty file", field=name)
    return data


def _check_text(name: str, text: str, limit: int) -> str | None:
    if len(text) > limit:
        raise ApiError(413, "text_too_long", f"field {name!r} has {len(text)} characters, above "
                       f"the limit of {limit}", field=name)
    return text if text.strip() else None


def _check_vector(name: str, value: Any, dim: int | None) -> np.ndarray | None:
    if value is None:
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ApiError(422, "bad_features", f"field {name!r} must be a non-empty array of "
                       f"numbers", field=name)
    vector = np.asarray(value, dtype=np.float32)
    if dim is not None and vector.shape[0] != dim:
        raise ApiError(422, "bad_features", f"field {name!r} has {vector.shape[0]} numbers; the "
                       f"model expects {dim}", field=name)
    if not np.all(np.isfinite(vector)):
        raise ApiError(422, "bad_features", f"field {name!r} holds NaN or infinite values",
                       field=name)
    return vector
