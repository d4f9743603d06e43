"""Server-rendered pages, one blueprint per role."""

from __future__ import annotations

from flask import Flask

from .session import load_session_user


def register_web(app: Flask) -> None:
    from . import admin, auth, courier, patient, pharmacist

    app.before_request(load_session_user)
    app.context_processor(auth.inject_user)
    for module in (auth, patient, pharmacist, courier, admin):
        app.register_blueprint(module.bp)
