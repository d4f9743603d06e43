"""Logs never hold a working password-reset or registration link: the token in the path is
redacted in gunicorn's access log and in the development server's request lines."""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace

from gunicorn.config import Config

from pharmacy.access_log import RedactingAccessLogger, RedactLinkTokens, redact_link_tokens

TOKEN = "IjEyMyI.aBcD_ef-12345.Zyx987"


def test_link_tokens_are_redacted_and_other_paths_left_alone() -> None:
    assert redact_link_tokens(f"GET /password/reset/{TOKEN} HTTP/1.1") == \
        "GET /password/reset/[redacted] HTTP/1.1"
    assert redact_link_tokens(f"/register/confirm/{TOKEN}?utm=x") == \
        "/register/confirm/[redacted]?utm=x"
    for untouched in ("GET /password/reset HTTP/1.1", "/patient/orders/12", "/register"):
        assert redact_link_tokens(untouched) == untouched


def test_gunicorns_access_log_line_carries_no_token() -> None:
    logger = RedactingAccessLogger(Config())
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"/password/reset/{TOKEN}",
               "PATH_INFO": f"/password/reset/{TOKEN}", "SERVER_PROTOCOL": "HTTP/1.1",
               "QUERY_STRING": "", "REMOTE_ADDR": "203.0.113.9",
               "HTTP_REFERER": f"https://mail.example/?u=/register/confirm/{TOKEN}"}
    response = SimpleNamespace(status="302 FOUND", sent=0, headers=[])
    request = SimpleNamespace(headers=[("REFERER", environ["HTTP_REFERER"])])
    atoms = logger.atoms(response, request, environ, timedelta(milliseconds=3))
    line = logger.cfg.access_log_format % atoms
    assert TOKEN not in line and "/password/reset/[redacted]" in line
    assert all(TOKEN not in str(value) for value in atoms.values())


def test_the_development_servers_request_lines_carry_no_token() -> None:
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1,
                               '%s - - "%s" %s -', ("127.0.0.1",
                                                    f"GET /register/confirm/{TOKEN} HTTP/1.1",
                                                    "302"), None)
    assert RedactLinkTokens().filter(record)
    assert TOKEN not in record.getMessage() and "[redacted]" in record.getMessage()


def test_gunicorns_error_log_carries_no_token_either() -> None:
    logger = RedactingAccessLogger(Config())
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    logger.error_log.addHandler(keep)
    try:
        logger.error("Error handling request %s %s", "GET", f"/password/reset/{TOKEN}")
        logger.warning("odd %s", "100%")  # a % in an argument is not a format
    finally:
        logger.error_log.removeHandler(keep)
    assert seen == ["Error handling request GET /password/reset/[redacted]", "odd 100%"]


def test_a_malformed_log_call_is_left_to_the_handler_not_raised_by_the_filter() -> None:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "a %s %s", (1,), None)
    assert RedactLinkTokens().filter(record)
