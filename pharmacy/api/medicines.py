"""The formulary, readable by every signed-in role."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import current_app, has_app_context, request
from flask.views import MethodView
from flask_smorest import Blueprint
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from ..caches import on_commit_of
from ..extensions import cache_failed, cache_redis, db, get_redis
from ..schemas.catalog import MedicinePageSchema, MedicineQuerySchema, MedicineSchema
from ..services import catalog
from .security import BEARER_DOC, require_roles

blp = Blueprint("api_medicines", __name__, url_prefix="/api/v1/medicines",
                description="The pharmacy's formulary")
blp.before_request(require_roles())

logger = logging.getLogger(__name__)

# Catalogue pages are the busiest read in the shop and change rarely: each process keeps the
# finished JSON of recent searches (services.catalog.PAGES) for as long as the catalogue
# version in Redis stands. Signing in and the role check still run on every request.


def _version() -> bytes | None:
    """The catalogue's current version, or None (no caching) when Redis cannot say.

    Remembered for a second per process: a change committed in this process is seen at
    once (``_bump_catalogue_version``), one committed elsewhere within a second.
    """
    remembered = catalog.VERSIONS.get("version")
    if remembered is not None:
        return remembered
    redis = cache_redis()
    if redis is None:
        return None
    try:
        value = redis.get(catalog.VERSION_KEY)
    except RedisError:
        cache_failed()
        return None
    version = value if isinstance(value, bytes) else b"0"
    catalog.VERSIONS.put("version", version)
    return version


def _catalogue_changes(session: Session) -> dict[str, bool] | None:
    return {"medicines": True} if catalog.changes_medicines(session) else None


def _bump_catalogue_version(_changes: dict[str, bool]) -> None:
    catalog.forget_locally()
    if has_app_context():
        try:
            get_redis().incr(catalog.VERSION_KEY)
        except RedisError:  # the pages' time limit still retires them
            logger.warning("could not raise the catalogue version in Redis")


on_commit_of("catalogue", _catalogue_changes, _bump_catalogue_version)


@blp.route("")
class MedicineList(MethodView):
    @blp.doc(**BEARER_DOC)
    @blp.arguments(MedicineQuerySchema, location="query")
    @blp.response(200, MedicinePageSchema)
    @blp.alt_response(401, description="Missing or invalid token")
    @blp.alt_response(422, description="Invalid query")
    def get(self, args: dict[str, Any]) -> Any:
        """Search the formulary."""
        # The rows are already shaped as MedicinePageSchema documents them (the schema
        # tests check it); dumping 50 entries field by field through marshmallow cost more
        # than the query, so the page goes out as it is.
        key = ((args.get("q") or "").lower(), args.get("prescription_only"), args["page"],
               args["page_size"])
        version = _version()
        body = catalog.PAGES.get((version, key)) if version is not None else None
        if body is None:
            page = catalog.search_medicines(db.session, **args).as_dict()
            body = json.dumps(page, separators=(",", ":")).encode()
            if version is not None:
                catalog.PAGES.put((version, key), body)
        response = current_app.response_class(body, mimetype="application/json")
        response.add_etag()
        return response.make_conditional(request)


@blp.route("/<int(max=2147483647):medicine_id>")
class MedicineItem(MethodView):
    @blp.doc(**BEARER_DOC)
    @blp.response(200, MedicineSchema)
    @blp.alt_response(401, description="Missing or invalid token")
    @blp.alt_response(404, description="No such medicine")
    def get(self, medicine_id: int) -> Any:
        """One medicine."""
        return catalog.get_medicine(db.session, medicine_id)
