"""Logging: one JSON object per line in production (text in development), for Hearth and
uvicorn alike. Log lines carry ids (connection, user, room, op), never message text, names
or tokens. Tokens travel in frames and headers; the one path that holds a secret, a
calendar feed's, is never logged: the access log (`server.accesslog`) and errors name the
route's template rather than the path."""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

import orjson

from server.transport import HANDSHAKE_LOG


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def config(*, json: bool, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for Hearth and uvicorn (also passed to uvicorn)."""
    formatter = {"()": JsonFormatter} if json else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "hearth", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"hearth": formatter},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            **{name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
            HANDSHAKE_LOG: {"level": "WARNING"},  # uvicorn's line per websocket handshake
        },
    }


def configure(*, json: bool, level: str = "INFO") -> dict[str, Any]:
    settings = config(json=json, level=level)
    logging.config.dictConfig(settings)
    return settings
