"""structlog setup: JSON or console output, and redaction of anything secret-looking.

The cost of a line matters: the Workspace controller logs every state change, and at a
few hundred reconciles a second the route through the standard library (a LogRecord,
caller lookup, a handler and its formatter per line) took a tenth of the operator's
CPU. So structlog's own loggers skip it: a call below the level returns at once (the
bound logger's method is a no-op), and a line is rendered by orjson and written
straight to stderr. Records from other libraries (aiohttp, asyncio) still come through
the standard library, rendered by the same processors into the same format.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import orjson
import structlog

LogFormat = Literal["json", "console"]

_SECRET_KEY = re.compile(
    r"(token|authorization|password|passwd|secret|credential|client[-_]?key|private[-_]?key"
    r"|api[-_]?key|cert(ificate)?[-_]?data|bearer)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9\-._~+/]+=*")
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----[\s\S]*?(-----END [A-Z ]+-----|$)")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# Every match of the three patterns above contains one of these: text without any is
# clean after one search instead of three substitutions.
_SUSPECT = re.compile(r"(?i)bearer|-----BEGIN|eyJ")
REDACTED = "[REDACTED]"


def redact_text(text: str) -> str:
    if _SUSPECT.search(text) is None:
        return text
    text = _BEARER.sub("Bearer " + REDACTED, text)
    text = _PEM.sub(REDACTED, text)
    return _JWT.sub(REDACTED, text)


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    # Keys are mostly the few dozen names the code logs with; bounded for the rest.
    return _SECRET_KEY.search(key) is not None


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: (REDACTED if _secret_key(str(k)) else _redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: no token, key or certificate reaches the output."""
    for key, value in event_dict.items():
        if _secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str | dict | list | tuple):
            event_dict[key] = _redact(value)
    return event_dict


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's line writer, with the name ``structlog.get_logger(name)`` was given
    (``add_logger_name`` reads it, as it reads a standard library logger's)."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedWriteLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        return _NamedWriteLogger(self._file, str(args[0]) if args else "")


def _orjson_dumps(value: Any, **kwargs: Any) -> str:
    # Non-string keys (nested values) are written as strings, like json.dumps does.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, **kwargs).decode()


def configure(fmt: LogFormat = "json", level: str = "info") -> None:
    """Route structlog (and stdlib logging, e.g. aiohttp's) to stderr in one format."""
    lvl = logging.getLevelNamesMapping().get(level.upper())
    if lvl is None:
        raise ValueError(f"unknown log level {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, renderer],
        logger_factory=_NamedWriteLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        cache_logger_on_first_use=True,
    )
    # Records from other libraries (aiohttp, asyncio) get the same processors.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
