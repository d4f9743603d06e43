"""The form every action page uses: its fields are read by name; it carries the CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm


class ActionForm(FlaskForm):  # type: ignore[misc]
    """CSRF only; pages read their fields from the request by name."""
