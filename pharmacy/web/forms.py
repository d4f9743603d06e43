"""The form every action page uses (its fields are read by name; it carries the CSRF token),
and reading a whole number typed into a page."""

from __future__ import annotations

from flask_wtf import FlaskForm


class ActionForm(FlaskForm):  # type: ignore[misc]
    """CSRF only; pages read their fields from the request by name."""


def whole_number(raw: str, *, digits: int = 4000) -> int | None:
    """A whole number typed in a form or query, or None.

    ASCII digits only: ``str.isdigit`` also accepts '²' or '٣', which ``int`` then refuses
    with an error (a 500 where the page meant to say "not a number").
    """
    if not (raw.isascii() and raw.isdigit()) or len(raw) > digits:
        return None
    return int(raw)
