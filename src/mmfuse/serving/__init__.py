"""HTTP inference: a FastAPI app around a fitted model, served by uvicorn.

``app`` builds the app, ``requests`` parses and checks request bodies, ``model`` decodes
items and runs micro-batches through the model's featurizer and fusion, ``batcher`` groups
concurrent requests, ``openapi`` describes the API, ``auth`` and ``middleware`` hold API keys,
metrics and the access log, ``server`` runs it all under uvicorn.

Importing this package is light: FastAPI and uvicorn are imported when an app is built or
a server started.
"""

from .app import (DEFAULT_MAX_QUEUE, DEFAULT_MAX_TEXT_CHARS, DEFAULT_MAX_UPLOAD_BYTES,
                  DEFAULT_REQUEST_TIMEOUT, create_app)
from .auth import API_KEYS_ENV, load_api_keys
from .batcher import ServiceStats
from .errors import ApiError
from .server import DEFAULT_DRAIN_TIMEOUT, run_server

__all__ = ["API_KEYS_ENV", "DEFAULT_DRAIN_TIMEOUT", "DEFAULT_MAX_QUEUE", "DEFAULT_MAX_TEXT_CHARS",
           "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_REQUEST_TIMEOUT", "ApiError", "ServiceStats",
           "create_app", "load_api_keys", "run_server"]
