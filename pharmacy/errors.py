"""Domain errors and the single error shape of the app.

API paths answer RFC 9457 ``application/problem+json``; pages answer a readable HTML page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from sqlalchemy.exc import DataError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException, InternalServerError

from .extensions import db

logger = logging.getLogger(__name__)

PROBLEM_MIME = "application/problem+json"


class DomainError(Exception):
    """A business rule said no. Subclasses set ``status`` and a stable snake_case ``code``."""

    status = 400
    code = "bad_request"
    title = "Bad Request"

    def __init__(self, detail: str, *, errors: Iterable[Mapping[str, str]] = (),
                 **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = [dict(e) for e in errors]
        self.extra = extra


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not Found"


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Forbidden"


class Unauthorised(DomainError):
    status, code, title = 401, "unauthorised", "Unauthorized"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class InvalidRequest(DomainError):
    status, code, title = 422, "invalid_request", "Unprocessable Content"


class TooManyAttempts(DomainError):
    status, code, title = 429, "too_many_attempts", "Too Many Requests"


def problem_response(status: int, title: str, detail: str | None = None, *, code: str,
                     errors: list[dict[str, str]] | None = None,
                     extra: Mapping[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "code": code}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_MIME
    return response


def _wants_problem_json() -> bool:
    return request.path.startswith("/api/") or request.path in {"/healthz", "/readyz", "/metrics"}


def _flatten_messages(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """webargs nests messages by location and field; flatten to [{field, message}]."""
    out: list[dict[str, str]] = []
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            # webargs puts the location ("json", "query") first; it is not part of the field.
            name = str(key) if prefix or key not in {"json", "query", "form", "headers",
                                                       "view_args", "files", "cookies"} else ""
            path = f"{prefix}.{name}" if prefix and name else (name or prefix)
            out.extend(_flatten_messages(value, path))
    elif isinstance(messages, list | tuple):
        if all(isinstance(m, str) for m in messages):
            out.extend({"field": prefix or "_body", "message": m} for m in messages)
        else:
            for m in messages:
                out.extend(_flatten_messages(m, prefix))
    else:
        out.append({"field": prefix or "_body", "message": str(messages)})
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain_error(err: DomainError) -> Any:
        db.session.rollback()
        if _wants_problem_json():
            return problem_response(err.status, err.title, err.detail, code=err.code,
                                    errors=err.errors, extra=err.extra)
        return render_template("error.html", status=err.status, title=err.title,
                               detail=err.detail), err.status

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Any:
        db.session.rollback()
        status = err.code or 500
        if status >= 500:
            original = getattr(err, "original_exception", None)
            logger.error("%s %s answered %d", request.method, request.path, status,
                         exc_info=original if isinstance(original, BaseException) else None)
        data = getattr(err, "data", None) or {}
        errors = _flatten_messages(data["messages"]) if "messages" in data else None
        code = "invalid_request" if status == 422 else _slug(err.name or "error")
        detail = err.description if status != 422 else "The request has invalid fields."
        if status == 413 and app.config.get("MAX_CONTENT_LENGTH"):
            limit = int(app.config["MAX_CONTENT_LENGTH"])
            size = f"{limit // 1_000_000} MB" if limit >= 1_000_000 else f"{limit // 1000} kB"
            detail = f"The upload is too large: at most {size} can be sent at once."
        if _wants_problem_json():
            response = problem_response(status, err.name or "Error", detail, code=code,
                                        errors=errors)
        else:
            response = app.make_response((render_template(
                "error.html", status=status, title=err.name, detail=err.description), status))
        # Werkzeug's 405 carries the allowed methods; keep them (flask-smorest drops them).
        for header, value in err.get_headers():
            if header.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(DataError)
    def _unstorable_input(err: DataError) -> Any:
        # The database refused a value the request carried (a NUL character in text, a number
        # out of range): the caller's input, so a 422 that names no internals; nothing stored.
        db.session.rollback()
        logger.info("database refused a request value: %s", type(err.orig).__name__)
        return _domain_error(InvalidRequest(
            "The request holds a value that cannot be stored (for example a NUL character)."))

    @app.errorhandler(StaleDataError)
    def _changed_meanwhile(err: StaleDataError) -> Any:
        # A versioned row (order, payment, prescription, batch) was changed by another
        # request between our read and our write: nothing was stored; try again.
        db.session.rollback()
        logger.info("concurrent change: %s", err)
        return _domain_error(Conflict("Someone changed this record at the same moment; "
                                      "reload and try again."))

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Any:
        if isinstance(err, HTTPException):  # pragma: no cover - handled above
            return _http_error(err)
        logger.exception("unhandled error")
        return _http_error(InternalServerError())
