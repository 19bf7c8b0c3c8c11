"""structlog set-up: JSON lines on stderr, with the request's trace id bound per task."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


class _StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is at that moment.

    structlog's PrintLogger keeps the stream it was created with; when that stream is later
    replaced and closed (test runners capturing output do this), every log call would raise.
    """

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _stderr_logger(*_: object) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Configure structlog (and stdlib logging, which aiohttp and drivers use) once, at start."""
    numeric = logging.getLevelName(level.upper())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
