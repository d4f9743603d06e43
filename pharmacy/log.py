"""Logging set-up for the web app and workers: one line per event, stamped with ids."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
import uuid

from flask import Flask, g, has_request_context, request


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request and job ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "job_id": getattr(record, "job_id", "-"),
        }
        if record.exc_info and record.exc_info[1] is not None:
            from .access_log import redact_link_tokens

            entry["exception"] = redact_link_tokens(safe_exception_text(record.exc_info[1]))
        return json.dumps(entry, ensure_ascii=False)


def safe_exception_text(exc: BaseException) -> str:
    """A traceback whose database errors name their kind and place, never their values.

    PostgreSQL's messages quote the offending value ('invalid input syntax for type
    integer: "<what the patient typed>"'), so a database error is shown as its class,
    SQLSTATE and constraint/table/column names only; everything else as usual.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)
    parts = []
    for index, item in enumerate(reversed(chain)):
        if index:
            parts.append("\nThe above exception led to the following exception:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(f"{type(item).__module__}.{type(item).__qualname__}: "
                     f"{_exception_message(item)}\n")
    return "".join(parts)


def _exception_message(exc: BaseException) -> str:
    from sqlalchemy.exc import StatementError

    original = exc.orig if isinstance(exc, StatementError) else exc
    diag = getattr(original, "diag", None)
    if isinstance(exc, StatementError) or diag is not None or _is_driver_error(original):
        where = {name: getattr(diag, name, None) for name in (
            "table_name", "column_name", "constraint_name")} if diag is not None else {}
        named = ", ".join(f"{k}={v}" for k, v in where.items() if v)
        return (f"[database error {type(original).__name__}, "
                f"sqlstate={getattr(original, 'sqlstate', None) or '-'}"
                f"{', ' + named if named else ''}; values not logged]")
    return str(exc)


def _is_driver_error(exc: object) -> bool:
    module = type(exc).__module__
    return module.startswith(("psycopg", "sqlite3"))


class ContextFilter(logging.Filter):
    """Adds the current request id and RQ job id (or "-") to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        try:
            from rq import get_current_job

            job = get_current_job()
        except Exception:  # outside a worker there is no job
            job = None
        record.job_id = job.id if job is not None else "-"
        return True


def configure_logging(level: str = "INFO") -> None:
    """Send the app's log records to stdout; idempotent (safe for app factories in tests)."""
    root = logging.getLogger()
    if any(getattr(h, "_dispensary", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stdout)
    formatter = JsonFormatter()
    formatter.converter = time.gmtime  # timestamps in UTC, as everything else
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    from .access_log import RedactLinkTokens

    handler.addFilter(RedactLinkTokens())  # the development server's request lines
    handler._dispensary = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic announces its plugins at INFO whenever it is imported; not worth a line each.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def init_request_ids(app: Flask) -> None:
    """Take the caller's X-Request-ID (if sane) or make one, and echo it in the response."""

    @app.before_request
    def _assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        ok = 0 < len(incoming) <= 64 and incoming.replace("-", "").isalnum()
        g.request_id = incoming if ok else uuid.uuid4().hex

    @app.after_request
    def _echo_request_id(response):  # type: ignore[no-untyped-def]
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        return response
