"""Request lines in logs never carry the secret of an e-mailed link.

A password-reset or registration link works by the token in its path, for an hour or a week:
a web server's access log (read by whoever runs the servers, shipped to log stores) would
otherwise hold working links. gunicorn's access log (`RedactingAccessLogger`, named in
gunicorn.conf.py) and the development server's request lines (`RedactLinkTokens`, on the
app's log handler) show the path with the token replaced.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger

#: Paths whose last segment is a link's secret (see pharmacy/web/auth.py).
_LINK_TOKEN = re.compile(r"(/(?:password/reset|register/confirm)/)[^/?#\s\"]+")
REDACTED = "[redacted]"


def redact_link_tokens(text: str) -> str:
    return _LINK_TOKEN.sub(rf"\1{REDACTED}", text)


class RedactLinkTokens(logging.Filter):
    """For log records that quote a request line (werkzeug's development server)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: the handler reports it, as without us
            return True
        redacted = redact_link_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RedactingAccessLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with every text atom of an access-log line redacted (the request
    line and path, the referrer, and the same again as headers and environ entries), and
    its error log's lines too ("Error handling request GET /password/reset/...")."""

    def _redacted(self, level: str, msg: object, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> None:
        try:
            text = str(msg) % args if args else str(msg)
        except Exception:
            text = " ".join(str(part) for part in (msg, *args))
        getattr(super(), level)(redact_link_tokens(text), **kwargs)

    def critical(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._redacted("critical", msg, args, kwargs)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._redacted("error", msg, args, kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._redacted("warning", msg, args, kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._redacted("info", msg, args, kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._redacted("debug", msg, args, kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._redacted("exception", msg, args, kwargs)

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any],
              request_time: timedelta) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key, value in atoms.items():
            if isinstance(value, str) and "/" in value:
                atoms[key] = redact_link_tokens(value)
        return atoms
