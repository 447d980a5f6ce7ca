"""Log lines of the command line: stdlib `logging`, configured once per command by the app's
`--log-level` / `--log-json` options, on stderr (stdout stays the command's own output).

One handler, on the root logger, and nothing on the package's loggers: a record is written once however
many commands a process runs (a test runs many) and whatever logger it comes from (a handler on
`idea_expansion` as well as on the root would print each line twice, through propagation). Configuring
again replaces that handler; the command's end removes it and restores the levels it changed.

Text lines read `2026-11-27T22:30:01Z INFO idea_expansion.pipeline: message` (UTC), with control
characters shown as escapes, as everywhere in the CLI (a message may quote user data). `--log-json`
writes one JSON object per line: ts, level, logger, message, and whatever the call passed as `extra`
(`execution_id`, ...), plus `exc_info` with the traceback when there is one."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

from ._common import printable

PACKAGE_LOGGER = "idea_expansion"


class LogLevel(StrEnum):
    """What `--log-level` accepts."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# Attributes every LogRecord has: whatever else a record carries came from `extra`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _utc(seconds: float | None) -> time.struct_time:
    return time.gmtime(seconds)


class TextFormatter(logging.Formatter):
    """`2026-11-27T22:30:01Z INFO idea_expansion.pipeline: message`, one line per record (a traceback
    follows on its own lines)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ")
        self.converter = _utc

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return printable(super().formatException(ei), multiline=True)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return printable(stack_info, multiline=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, milliseconds), level, logger, message, the `extra` fields,
    and exc_info / stack_info when present. Non-ASCII is escaped, so no character can move the cursor."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a record comes (as `logging.lastResort` does), so a test
    runner that swaps the stream for each command gets each command's lines."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


_current: Callable[[], object] | None = None
"""The configuration in force, as a picklable call that repeats it (in a worker process)."""


def current_configuration() -> Callable[[], object] | None:
    """What configures a fresh process's logging as this one's is (`run_worker(process_setup=...)`)."""
    return _current


def configure_logging(level: LogLevel | str, *, as_json: bool = False) -> Callable[[], None]:
    """Send log records to stderr at `level`: the package's at `level`, other libraries' at `level` but
    never below warning unless it is debug (an HTTP client's INFO line per request is noise). Replaces what
    an earlier call set; returns what undoes it."""
    global _current
    chosen = getattr(logging, LogLevel(level).value.upper())
    root, package = logging.getLogger(), logging.getLogger(PACKAGE_LOGGER)
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    previous = (root.level, package.level)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING if chosen == logging.INFO else chosen)
    package.setLevel(chosen)
    earlier, _current = _current, functools.partial(configure_logging, LogLevel(level).value, as_json=as_json)

    def undo() -> None:
        global _current
        _current = earlier
        root.removeHandler(handler)
        root.setLevel(previous[0])
        package.setLevel(previous[1])

    return undo
