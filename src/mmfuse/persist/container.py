"""The model file's container: a zip of a JSON header and a payload, read bounded and
checked (format, schema version, size and sha256 of the payload)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError

FORMAT = "mmfuse-model"
#: Version of the file layout. Bump it when the payload's structure changes; readers accept
#: files from MIN_SCHEMA_VERSION up to SCHEMA_VERSION.
SCHEMA_VERSION = 1
MIN_SCHEMA_VERSION = 1
HEADER_NAME = "mmfuse-model.json"
PAYLOAD_NAME = "model.state"
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 4 << 30
SUFFIX = ".mmfuse"


class ModelFileError(InputError):
    """A model file that cannot be loaded: not a model, damaged, tampered, too new, or
    holding a type that is not allowed."""


class Container:
    def __init__(self, path: str | os.PathLike):
        self.path = path
        from .._io import check_regular_file

        try:
            check_regular_file(path, "model")  # never open a pipe or a device
        except InputError as exc:
            raise ModelFileError(str(exc)) from None
        try:
            self.data = Path(path).read_bytes()
        except FileNotFoundError:
            raise ModelFileError(f"model file not found: {os.fspath(path)!r}") from None
        except IsADirectoryError:
            raise ModelFileError(f"model path is a directory, not a file: "
                                 f"{os.fspath(path)!r}") from None
        except OSError as exc:
            raise ModelFileError(f"cannot read model file {os.fspath(path)!r}: {exc}") from None

    def __enter__(self) -> zipfile.ZipFile:
        try:
            self.archive = zipfile.ZipFile(io.BytesIO(self.data))
        except Exception as exc:  # zipfile raises several types on garbage
            raise ModelFileError(
                f"{os.fspath(self.path)!r} is not an mmfuse model file, or it is truncated or "
                f"damaged ({exc})"
            ) from None
        return self.archive

    def __exit__(self, *exc: Any) -> None:
        self.archive.close()


def open_container(path: str | os.PathLike) -> Container:
    return Container(path)


def read_member(archive: zipfile.ZipFile, name: str, limit: int, path: Any) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ModelFileError(f"{os.fspath(path)!r} is not an mmfuse model file: it has no "
                             f"{name!r} member") from None
    if info.file_size > limit or info.file_size > max(200 * info.compress_size, 64 << 20):
        raise ModelFileError(f"model file {os.fspath(path)!r}: member {name!r} declares "
                             f"{info.file_size} bytes from {info.compress_size}, above the "
                             f"limits; refusing it")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError,
            zlib.error) as exc:
        raise ModelFileError(f"model file {os.fspath(path)!r} is truncated or damaged "
                             f"(reading {name!r}: {exc})") from None


def read_header_of(archive: zipfile.ZipFile, path: Any) -> dict[str, Any]:
    raw = read_member(archive, HEADER_NAME, MAX_HEADER_BYTES, path)
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ModelFileError(f"model file {os.fspath(path)!r} has a damaged header: it nests "
                             f"too deeply to be read") from None
    except ValueError as exc:  # bad UTF-8 or JSON, or a number of thousands of digits
        reason = ("it holds a number with too many digits" if "digits" in str(exc)
                  else str(exc))
        raise ModelFileError(f"model file {os.fspath(path)!r} has a damaged header: "
                             f"{reason}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise ModelFileError(f"{os.fspath(path)!r} is not an mmfuse model file "
                             f"(format {found!r})")
    schema = header.get("schema_version")
    written_by = header.get("mmfuse_version", "?")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise ModelFileError(f"model file {os.fspath(path)!r} has no valid schema_version")
    if schema > SCHEMA_VERSION:
        raise ModelFileError(
            f"model file {os.fspath(path)!r} was written by mmfuse {written_by} with model "
            f"schema {schema}; this mmfuse {current_version()} reads schemas "
            f"{MIN_SCHEMA_VERSION}-{SCHEMA_VERSION}: upgrade mmfuse to load it"
        )
    if schema < MIN_SCHEMA_VERSION:
        raise ModelFileError(
            f"model file {os.fspath(path)!r} was written by mmfuse {written_by} with model "
            f"schema {schema}, which this mmfuse {current_version()} no longer reads "
            f"(schemas {MIN_SCHEMA_VERSION}-{SCHEMA_VERSION}); retrain and save it again"
        )
    for key in ("payload", "encoders", "classes"):
        if key not in header:
            raise ModelFileError(f"model file {os.fspath(path)!r}: header lacks {key!r}")
    for key, kind in _HEADER_TYPES.items():
        if key in header and not isinstance(header[key], kind):
            raise ModelFileError(f"model file {os.fspath(path)!r} has a damaged header: its "
                                 f"{key!r} is {_json_kind(header[key])}, expected "
                                 f"{_json_kind(kind())}")
    return header


#: what the writer puts under each header key (a reader relies on it)
_HEADER_TYPES: dict[str, type] = {
    "payload": dict, "encoders": dict, "classes": list, "versions": dict, "modalities": list,
    "used_modalities": list, "types": list, "privacy": dict, "mmfuse_version": str,
    "fusion": str, "fusion_class": str, "estimator": str}


def _json_kind(value: Any) -> str:
    for kind, name in ((bool, "true/false"), (dict, "an object"), (list, "a list"),
                       (str, "text"), (int, "a number"), (float, "a number")):
        if isinstance(value, kind):
            return name
    return "null"


def read_payload(archive: zipfile.ZipFile, header: dict[str, Any], path: Any) -> bytes:
    info = header["payload"]
    if not isinstance(info, dict) or info.get("name") != PAYLOAD_NAME:
        raise ModelFileError(f"model file {os.fspath(path)!r}: header names no valid payload")
    payload = read_member(archive, PAYLOAD_NAME, MAX_PAYLOAD_BYTES, path)
    digest = hashlib.sha256(payload).hexdigest()
    if len(payload) != info.get("size") or digest != info.get("sha256"):
        raise ModelFileError(
            f"model file {os.fspath(path)!r} failed its integrity check: the payload's size or "
            f"sha256 differs from the header's; the file is damaged or was altered"
        )
    return payload


#: The timestamp of every member of a model file: a fixed one, so that the same model
#: saved twice (or by two versions that agree) is the same bytes (zip's epoch, 1980).
MEMBER_TIME = (1980, 1, 1, 0, 0, 0)


def zip_member(name: str, compress_type: int) -> zipfile.ZipInfo:
    """A zip member header with :data:`MEMBER_TIME`, read/write for the owner only."""
    info = zipfile.ZipInfo(name, date_time=MEMBER_TIME)
    info.compress_type = compress_type
    info.external_attr = 0o600 << 16
    return info


def write_container(header: dict[str, Any], payload: bytes) -> bytes:
    """The bytes of a model file: the header (deflated) and the payload (stored)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zip_member(HEADER_NAME, zipfile.ZIP_DEFLATED),
                         json.dumps(header, indent=2, default=str))
        archive.writestr(zip_member(PAYLOAD_NAME, zipfile.ZIP_STORED), payload)
    return buffer.getvalue()


def payload_record(payload: bytes) -> dict[str, Any]:
    """The header's ``payload`` entry: name, size and sha256."""
    return {"name": PAYLOAD_NAME, "size": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest()}


def current_version() -> str:
    from .. import __version__

    return __version__


def library_versions() -> dict[str, str]:
    import sys

    import sklearn

    return {"python": ".".join(map(str, sys.version_info[:3])), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}


def jsonable(obj: Any) -> Any:
    """Labels and weights as plain JSON values (numpy scalars unwrapped)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)
