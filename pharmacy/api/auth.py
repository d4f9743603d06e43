"""Tokens for API clients, and who the caller is."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import Blueprint

from ..errors import TooManyAttempts, Unauthorised
from ..extensions import db
from ..rate_limits import note_sign_in_failure, unknown_account_counter
from ..schemas.auth import TokenRequestSchema, TokenSchema, UserSchema
from ..services import auth
from .security import BEARER_DOC, current_api_user, require_roles

blp = Blueprint("api_auth", __name__, url_prefix="/api/v1/auth",
                description="API access tokens")

_who = require_roles()


class SecondFactorRequired(Unauthorised):
    code = "totp_required"


class WrongSecondFactor(Unauthorised):
    code = "totp_invalid"


@blp.route("/token")
class TokenResource(MethodView):
    @blp.arguments(TokenRequestSchema)
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, description="Wrong e-mail or password (code `unauthorised`); for an "
                      "account with two-step sign-in, a missing (`totp_required`) or wrong or "
                      "reused (`totp_invalid`) `totp` code")
    @blp.alt_response(422, description="Invalid request body")
    @blp.alt_response(429, description="Too many attempts (account locked for a while, or too "
                      "many from this client or for this account); see Retry-After")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Exchange e-mail and password (and, with two-step sign-in on, a code) for a token."""
        cfg = current_app.config
        result = auth.authenticate(
            db.session, body["email"], body["password"],
            max_failures=cfg["LOGIN_MAX_FAILURES"],
            lockout=timedelta(seconds=cfg["LOGIN_LOCKOUT_S"]),
            totp_code=body.get("totp"), request_id=g.get("request_id"),
            count_unknown=unknown_account_counter(body["email"]),
        )
        db.session.commit()  # failures and lockouts are kept even though we answer an error
        if result.outcome is auth.SignIn.SECOND_FACTOR_REQUIRED:
            # The password was right: not a failure, but no token without the code.
            raise SecondFactorRequired("This account uses two-step sign-in: send the code "
                                       "from its authenticator app in the 'totp' field.")
        if result.outcome is not auth.SignIn.OK:
            note_sign_in_failure()
        if result.outcome is auth.SignIn.LOCKED:
            raise TooManyAttempts("Too many failed sign-in attempts; try again later.")
        if result.outcome is auth.SignIn.BAD_SECOND_FACTOR:
            raise WrongSecondFactor("The code is wrong, expired or already used.")
        if result.outcome is not auth.SignIn.OK or result.user is None:
            raise Unauthorised("Wrong e-mail or password.")
        return {
            "access_token": auth.issue_token(cfg["SECRET_KEY"], result.user),
            "token_type": "Bearer",
            "expires_in": cfg["API_TOKEN_TTL_S"],
        }


@blp.route("/me")
class MeResource(MethodView):
    @blp.doc(**BEARER_DOC)
    @blp.response(200, UserSchema)
    @blp.alt_response(401, description="Missing or invalid token")
    def get(self) -> Any:
        """The account the bearer token belongs to."""
        _who()
        return current_api_user()
