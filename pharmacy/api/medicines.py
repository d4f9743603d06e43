"""The formulary, readable by every signed-in role."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask.views import MethodView
from flask_smorest import Blueprint

from ..extensions import db
from ..schemas.catalog import MedicinePageSchema, MedicineQuerySchema, MedicineSchema
from ..services import catalog
from .security import BEARER_DOC, require_roles

blp = Blueprint("api_medicines", __name__, url_prefix="/api/v1/medicines",
                description="The pharmacy's formulary")
blp.before_request(require_roles())


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
        return jsonify(catalog.search_medicines(db.session, **args).as_dict())


@blp.route("/<int(max=2147483647):medicine_id>")
class MedicineItem(MethodView):
    @blp.doc(**BEARER_DOC)
    @blp.response(200, MedicineSchema)
    @blp.alt_response(401, description="Missing or invalid token")
    @blp.alt_response(404, description="No such medicine")
    def get(self, medicine_id: int) -> Any:
        """One medicine."""
        return catalog.get_medicine(db.session, medicine_id)
