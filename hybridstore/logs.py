"""Logging: the loggers the library writes to, and the set-up the command line uses.

The library never configures structlog (that is the application's choice) and never
writes to stdout (that is the application's output: a ``--json`` answer, a pipe). Its
modules log through ``get_logger``: once the application has configured structlog, events
go wherever that configuration sends them; until then, warnings and errors are written as
text lines to stderr and quieter events are dropped, as the standard library's
``logging`` does for a library nobody configured.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["LEVELS", "configure_logging", "get_logger"]

LEVELS = ("debug", "info", "warning", "error", "critical")

#: What the library shows before the application configures structlog.
UNCONFIGURED_LEVEL = logging.WARNING


class _Stderr:
    """``sys.stderr`` as it is when written to (a test or an application may replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _LibraryLogger:
    """structlog's logger for ``name`` if the application configured structlog, else a
    stderr logger for warnings and worse. Decided at each call, so configuring structlog
    after importing hybridstore takes effect; ``bind`` keeps the choice open too."""

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}
        self._unconfigured: Any = None

    def _logger(self) -> Any:
        if structlog.is_configured():
            logger = structlog.get_logger(self._name)
            return logger.bind(**self._context) if self._context else logger
        if self._unconfigured is None:
            self._unconfigured = structlog.wrap_logger(
                structlog.PrintLogger(_Stderr()),  # type: ignore[arg-type]
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.dev.ConsoleRenderer(colors=False),
                ],
                wrapper_class=structlog.make_filtering_bound_logger(UNCONFIGURED_LEVEL),
            ).bind(logger=self._name, **self._context)
        return self._unconfigured

    def bind(self, **values: Any) -> _LibraryLogger:
        return _LibraryLogger(self._name, {**self._context, **values})

    def __getattr__(self, method: str) -> Any:
        return getattr(self._logger(), method)


def get_logger(name: str) -> Any:
    """The logger a hybridstore module writes to (see the module's docstring)."""
    return _LibraryLogger(name)


def configure_logging(level: str = "warning", json_logs: bool = False) -> None:
    """Send structlog events at ``level`` and above to stderr, as text or JSON lines.

    For the command line (and the processes it starts): it configures structlog for the
    whole process, which a library must leave to its application."""
    renderer: structlog.types.Processor
    if json_logs:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
