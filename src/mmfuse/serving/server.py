"""Running the service: load the model file, then uvicorn with TLS, API keys, logging and
a graceful drain on SIGTERM."""

from __future__ import annotations

import logging
import logging.config
import math
import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .._errors import InputError, require
from .app import (DEFAULT_MAX_QUEUE, DEFAULT_MAX_TEXT_CHARS, DEFAULT_MAX_UPLOAD_BYTES,
                  DEFAULT_REQUEST_TIMEOUT, create_app)
from .auth import API_KEYS_ENV, load_api_keys

logger = logging.getLogger("mmfuse.serve")

DEFAULT_DRAIN_TIMEOUT = 30.0


def run_server(model_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, *,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, batch_max: int = 16,
               batch_wait_ms: float = 5.0, trusted: Iterable[str] = (),
               encoder_options: Mapping[str, Any] | None = None,
               log_level: str = "info", api_keys: Iterable[str] | None = None,
               api_key_file: str | os.PathLike | None = None,
               ssl_certfile: str | os.PathLike | None = None,
               ssl_keyfile: str | os.PathLike | None = None,
               ssl_keyfile_password: str | None = None,
               max_queue: int | None = DEFAULT_MAX_QUEUE,
               request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
               drain_timeout: float = DEFAULT_DRAIN_TIMEOUT, access_log: bool = True,
               device: str | None = None) -> None:
    """Load the model file and serve it with uvicorn until SIGTERM or Ctrl-C.

    Parameters are those of :func:`create_app`, plus where to listen, what
    :func:`mmfuse.persist.load` needs, and:

    api_key_file : path-like, optional
        One key per line (see :func:`load_api_keys`). Keys in ``$MMFUSE_API_KEYS`` and in
        ``api_keys`` are accepted too; with none of them the service is unauthenticated and
        says so at start-up (a warning when ``host`` is not a loopback address).
    ssl_certfile, ssl_keyfile, ssl_keyfile_password : optional
        PEM certificate (chain) and private key: the service speaks HTTPS only. They are
        loaded before the model, so a wrong file fails at once with a clear error.
    drain_timeout : float, default=30.0
        On SIGTERM (or Ctrl-C) the service stops accepting connections and lets in-flight
        requests finish for up to this many seconds, then stops; the call returns normally
        (a process running it exits 0).
    log_level : str, default="info"
        Level of uvicorn's and mmfuse's loggers; ``"info"`` shows the access log.
    device : {"cpu", "cuda", "auto"}, optional
        If given, the model's encoders and learned heads move there
        (``model.to(device)``).

    Blocks until stopped.
    """
    uvicorn = require("uvicorn", "serve")
    from ..persist import load

    if not isinstance(drain_timeout, (int, float)) or isinstance(drain_timeout, bool) \
            or not 0 <= drain_timeout < math.inf:
        raise InputError(f"drain_timeout must be a non-negative number of seconds; got "
                         f"{drain_timeout!r}")
    keys = load_api_keys(api_key_file) + list(api_keys or ())
    _check_tls(ssl_certfile, ssl_keyfile, ssl_keyfile_password)
    log_config = _log_config(log_level)
    logging.config.dictConfig(log_config)  # now, so that the notices below show
    for level, message in startup_notices(host, port, len(keys), ssl_certfile is not None):
        logger.log(level, "%s", message)

    started = time.perf_counter()
    model = load(model_path, trusted=trusted, encoder_options=encoder_options)
    if device is not None:
        from ..devices import resolve_device

        model.to(resolve_device(device))
    logger.info("loaded the model in %.2f s", time.perf_counter() - started)
    app = create_app(model, max_upload_bytes=max_upload_bytes, max_text_chars=max_text_chars,
                     batch_max=batch_max, batch_wait_ms=batch_wait_ms, api_keys=keys,
                     max_queue=max_queue, request_timeout=request_timeout,
                     access_log=access_log)
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level=log_level, workers=1, log_config=log_config,
        access_log=False, server_header=False, timeout_graceful_shutdown=drain_timeout,
        ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
        ssl_keyfile_password=ssl_keyfile_password))
    received: list[int] = []

    def note(number: int, frame: Any) -> None:
        received.append(number)
        server.should_exit = True

    previous = {}
    if threading.current_thread() is threading.main_thread():
        # uvicorn handles SIGTERM/SIGINT itself (stop accepting, drain, shut down) and then
        # re-raises the signal to the handler it found: ours notes it, rather than the default
        # handler killing the process (status -15) after a clean drain.
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, note)
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        logger.info("stopped after %s; in-flight requests were drained",
                    signal.Signals(received[0]).name)


def _check_tls(certfile: Any, keyfile: Any, password: str | None) -> None:
    if certfile is None:
        if keyfile is not None:
            raise InputError("ssl_keyfile was given without ssl_certfile; give both (or a "
                             "certfile that holds the key too)")
        return
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(os.fspath(certfile), None if keyfile is None else
                                os.fspath(keyfile), password)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise InputError(f"the TLS certificate {os.fspath(certfile)!r} and key "
                             f"{None if keyfile is None else os.fspath(keyfile)!r} could not "
                             f"be loaded ({exc.reason or exc}); expected PEM files of a "
                             f"certificate and its private key") from None
        raise InputError(f"cannot read the TLS file {exc.filename or os.fspath(certfile)!r}: "
                         f"{exc.strerror or exc}") from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def startup_notices(host: str, port: int, n_keys: int, tls: bool) -> list[tuple[int, str]]:
    """What the service says about its exposure at start-up: ``(logging level, message)``."""
    where = f"{'https' if tls else 'http'}://{host}:{port}"
    loopback = _is_loopback(host)
    notices = []
    if n_keys:
        notices.append((logging.INFO, f"API keys required ({n_keys} accepted) on every path "
                        f"but /health at {where}"))
        if not loopback and not tls:
            notices.append((logging.WARNING, f"listening on {host} without TLS: API keys and "
                            f"uploads cross the network in clear text; give --ssl-certfile/"
                            f"--ssl-keyfile or put a TLS-terminating proxy in front"))
    elif loopback:
        notices.append((logging.INFO, f"unauthenticated: any local process can use {where}; "
                        f"give --api-key-file or ${API_KEYS_ENV} to require a key"))
    else:
        notices.append((logging.WARNING, f"unauthenticated on {host}: anyone who can reach "
                        f"{where} can use the model; give --api-key-file or ${API_KEYS_ENV} "
                        f"to require a key"))
    return notices


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging set-up, plus mmfuse's loggers (messages to stderr, access to stdout)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["mmfuse_access"] = {"formatter": "default", "class": "logging.StreamHandler",
                                           "stream": "ext://sys.stdout"}
    config["loggers"]["mmfuse"] = {"handlers": ["default"], "level": level.upper(),
                                   "propagate": False}
    config["loggers"]["mmfuse.access"] = {"handlers": ["mmfuse_access"], "level": level.upper(),
                                          "propagate": False}
    return config
