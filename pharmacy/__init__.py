"""Dispensary web app. ``create_app`` is the only way to make one."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from config import Config

from .log import configure_logging, init_request_ids


def create_app(config: Config | None = None) -> Flask:
    """Build the Flask app: settings, extensions, blueprints, error handlers, logging.

    Reads the environment only when ``config`` is None. Opens no connection.
    """
    config = config if config is not None else Config.from_env()
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(config.as_flask_mapping())
    app.config["DISPENSARY_CONFIG"] = config
    configure_logging(config.LOG_LEVEL)
    if config.SQLALCHEMY_DATABASE_URI.startswith("sqlite:///"):
        Path(config.SQLALCHEMY_DATABASE_URI.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )

    from . import models  # noqa: F401  (registers every table on the metadata)
    from .models import encrypted

    encrypted.configure(app, encrypted.key_ring(config.FIELD_ENCRYPTION_KEYS, config.SECRET_KEY))
    from .extensions import api, csrf, db, init_redis, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).resolve().parent.parent / "migrations"),
                     render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    init_redis(app)
    init_request_ids(app)

    from .api import register_api

    api.init_app(app, spec_kwargs={"components": {"securitySchemes": {
        "bearerAuth": {"type": "http", "scheme": "bearer"}}}})
    register_api(api, csrf)

    from .metrics import init_metrics

    init_metrics(app)

    from .security_headers import init_security_headers

    init_security_headers(app)

    from .health import bp as health_bp
    from .web import register_web

    app.register_blueprint(health_bp)
    register_web(app)

    from .errors import register_error_handlers

    register_error_handlers(app)

    from .rate_limits import init_rate_limits

    init_rate_limits(app)  # wraps the sign-in views, so after every blueprint

    from .cli import register_cli

    register_cli(app)
    return app
