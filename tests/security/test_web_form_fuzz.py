"""Hypothesis against the pages' POST forms: bad input gets a 4xx or a page saying why, never a
5xx.

The API is fuzzed from its OpenAPI document (test_api_fuzz.py); the server-rendered pages have
no schema, so this module drives their forms directly. For each role with pages (patient,
pharmacist, courier, admin) and each web POST route the authorisation matrix lets that role
use, it signs in, takes a valid CSRF token and posts generated form data: the form's real
field names (from the code, and from the page that draws the form) filled with empty, very
long, control-character, RTL, emoji, combining-mark, out-of-range and oddly formatted
values, plus unknown extra fields. The world of objects is the authorisation matrix's, with
a draft purchase order added and the route started, so that the forms reach their services.

Seeded per role × route so that CI is repeatable; FUZZ_RANDOM=1 explores new examples, and
FUZZ_SCALE=10 tries ten times as many.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import re
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from pharmacy.models import (
    DeliveryRoute,
    DeliveryStop,
    Prescription,
    PrescriptionStatus,
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderStatus,
    StopStatus,
)
from pharmacy.models.base import utcnow
from pharmacy.services.basket import SAFETY_QUESTIONS
from pharmacy.services.delivery import FAILURE_REASONS
from tests.factories import DEFAULT_PASSWORD
from tests.pharmacy.helpers import csrf_token, web_login
from tests.security import test_authorisation_matrix as matrix

world = matrix.world  # the authorisation matrix's users and objects, reused as a fixture

PAGE_ROLES = ("patient", "pharmacist", "courier", "admin")
# Examples per role × route (about 50 of them; the whole file runs in about a minute): fewer
# where the form has no fields of its own, only unknown extra ones; more for the courier's
# proof of delivery, the form with the most free text sent from the street.
MAX_EXAMPLES, MAX_EXAMPLES_NO_FIELDS = 12, 4
MORE_EXAMPLES = {"courier.action": 30}

# Web POST routes not fuzzed here, and why.
SKIPPED = {
    "auth.logout": "ends the session (it takes no fields but the CSRF token)",
    "auth.second_factor": "only while a sign-in waits for its code; tests/security/test_totp.py",
    "auth.reset_password": "needs a valid e-mailed link; tests/security/test_password_reset.py",
    "auth.confirm_registration": "needs a registration's e-mailed link; "
                                 "tests/pharmacy/test_patient_pages.py",
}

# Each route's fields, as its view reads them (pharmacy/web/*.py). The page that draws the
# form adds what it shows (FORM_PAGES), e.g. a prescription's "decision-<warning>" fields.
FIELDS: dict[str, tuple[str, ...]] = {
    "auth.login": ("email", "password"),
    "auth.register": ("email", "password", "given_name", "family_name", "date_of_birth",
                      "nhs_number", "terms", "privacy"),
    "auth.change_password": ("current", "new", "confirm"),
    "auth.forgot_password": ("email",),
    "account.setup": (),
    "account.confirm": ("code",),
    "account.disable": ("code",),
    "account.recovery_codes": ("code",),
    "patient.request_repeat": (),
    "patient.add_to_basket": ("key", "quantity", "remove", *(q[0] for q in SAFETY_QUESTIONS)),
    "patient.place": ("address_id", "slot_id"),
    "patient.cancel": (),
    "patient.rebook": ("slot_id",),
    "patient.pay_submit": ("payment_method",),
    "patient.pay_confirm": (),
    "patient.setup_intent": (),
    "patient.profile_update": ("phone", "charge_exemption", "sync_day", "uses_dose_pack",
                               "nominated_pharmacy_id"),
    "patient.allergy_add": ("substance", "remove"),
    "patient.address_add": ("line1", "line2", "city", "postcode", "delivery_notes",
                            "make_default"),
    "pharmacist.act": ("note", "reason", "question", "answer", "withdraw-reason", "item_id",
                       "owing-reason"),
    "pharmacist.recall": ("medicine_id", "lot_number", "reason"),
    "pharmacist.receive": ("medicine_id", "lot_number", "expiry_date", "quantity", "supplier",
                           "reference", "location"),
    "pharmacist.batch_action": ("counted", "note", "location", "reason", "quantity",
                                "witness"),
    "pharmacist.cd_register_correction": ("entry_id", "direction", "quantity", "reason"),
    "pharmacist.reorder_settings": ("service_level", "minimum_order_quantity"),
    "pharmacist.purchase_order_action": ("reason",),
    "pharmacist.purchase_order_line": ("quantity",),
    "pharmacist.decide_account_link": ("note",),
    "pharmacist.close_recall": ("checked", "note"),
    "pharmacist.reorders_accept": ("suggestion", "supplier"),
    "planner.plan_slot": (),
    "planner.move": ("stop_id", "route_id"),
    "planner.replan": (),
    "courier.start": (),
    "courier.action": ("action", "client_action_id", "recipient_name", "signature",
                       "id_checked", "failure_reason", "latitude", "longitude"),
    "admin.requeue": (),
    "admin.create_user": ("email", "full_name", "role", "password", "pharmacy_ods",
                          "shift_start", "shift_end", "vehicle"),
    "admin.change_user": ("reason",),
}

PAYMENTS = ("patient.pay_submit", "patient.pay_confirm", "patient.setup_intent")

# The GET page (endpoint) that draws each route's form, to read its name="..." attributes.
FORM_PAGES = {
    "auth.login": "auth.login", "auth.register": "auth.register",
    "auth.change_password": "auth.change_password",
    "auth.forgot_password": "auth.forgot_password",
    "account.setup": "account.two_factor", "account.confirm": "account.two_factor",
    "account.disable": "account.two_factor",
    "account.recovery_codes": "account.two_factor",
    "patient.request_repeat": "patient.medicines", "patient.add_to_basket": "patient.shop",
    "patient.place": "patient.basket", "patient.cancel": "patient.track",
    "patient.rebook": "patient.track", "patient.profile_update": "patient.profile",
    "patient.allergy_add": "patient.profile", "patient.address_add": "patient.profile",
    "pharmacist.act": "pharmacist.detail", "pharmacist.recall": "pharmacist.stock",
    "pharmacist.receive": "pharmacist.goods_in", "pharmacist.batch_action": "pharmacist.batch",
    "pharmacist.cd_register_correction": "pharmacist.cd_register",
    "pharmacist.reorder_settings": "pharmacist.reorders",
    "pharmacist.reorders_accept": "pharmacist.reorders",
    "pharmacist.purchase_order_action": "pharmacist.purchase_order",
    "pharmacist.purchase_order_line": "pharmacist.purchase_order",
    "pharmacist.decide_account_link": "pharmacist.account_links",
    "pharmacist.close_recall": "pharmacist.recalled_parcels",
    "planner.plan_slot": "planner.waves", "planner.move": "planner.wave",
    "planner.replan": "planner.wave", "courier.start": "courier.route",
    "courier.action": "courier.stop", "admin.requeue": "admin.jobs",
    "admin.create_user": "admin.users", "admin.change_user": "admin.user",
}


def _cases() -> list[Any]:
    cases = []
    for (endpoint, method), allowed in sorted(matrix.MATRIX.items()):
        if method != "POST" or endpoint.startswith("api") or endpoint in SKIPPED:
            continue
        for role in PAGE_ROLES:
            if role in allowed:
                marks = [pytest.mark.xfail(strict=True, reason=KNOWN_5XX[(role, endpoint)])
                         ] if (role, endpoint) in KNOWN_5XX else []
                cases.append(pytest.param(role, endpoint, id=f"{role}-{endpoint}",
                                          marks=marks))
    return cases


# Defects this fuzz found (a 5xx), kept visible until fixed: (role, endpoint) -> what breaks.
KNOWN_5XX: dict[tuple[str, str], str] = {}


# --- generated values -------------------------------------------------------------------------

LONG = 10_000
NASTY = (
    "", " ", "\t\n", "x" * LONG, "7" * LONG, "💊" * LONG, "\x00", "a\x00b", "\x00" * 50,
    "\x01\x02\x1b[31m\x7f", "\r\n\r\n", "\u202eevil\u202c", "\u200f\u05e9\u05dc\u05d5\u05dd",
    "مرحبا", "💊🚚👩🏽‍⚕️", "e\u0301" * 200, "Z\u0351\u0363\u0334\u0315", "\ufeff1", "\uffff",
    "-1", "0", "-0", "00", "+1", " 1 ", "1.5", "-2147483649", "2147483648", "9" * 40,
    "1e309", "-1e309", "1e-400", "NaN", "nan", "inf", "-Infinity", "0x10", "1_000", "١٢٣",
    "²", "½", "Ⅻ", "2030-01-01", "2030-02-30", "0000-00-00", "9999-12-31", "10000-01-01",
    "2030-1-1", "01/02/2030", "20300101", "2030-W01-1", "2030-001", "+002030-01-01",
    "2030-01-01T25:61:00", "yesterday", "yes", "no", "on", "true", "null", "None", "[]",
    "{}", "'; DROP TABLE users; --", "<script>alert(1)</script>", "%s%n%x", "{{ 7*7 }}",
    "../../etc/passwd", "a@b.c", "\\\\server\\share",
)
PNG_URL = "data:image/png;base64," + base64.b64encode(matrix.PNG).decode()


def _hints(ids: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Values that get past a field's first check, so the rest of the form is reached."""
    some_ids = tuple(str(ids[k]) for k in ("order_id", "prescription_id", "item_id",
                                           "medicine_id", "route_id", "stop_id", "batch_id"))
    return {
        "action": ("arrived", "delivered", "failed", "DELIVERED"),
        "failure_reason": tuple(FAILURE_REASONS),
        "signature": (PNG_URL, "data:image/png;base64,!!!", "data:image/png;base64,",
                      "data:image/png;base64," + base64.b64encode(b"not a png").decode(),
                      "data:image/svg+xml;base64,PHN2Zy8+"),
        "id_checked": ("yes",), "terms": ("yes",), "privacy": ("yes",),
        "uses_dose_pack": ("yes",), "make_default": ("yes",),
        "key": (f"rx:{ids['item_id']}", f"otc:{ids['medicine_id']}", "otc:", "rx:99999999999",
                "otc:-1", "nope:1"),
        "direction": ("add", "remove"),
        "charge_exemption": ("", "none", "over_60", "maternity"),
        "payment_method": ("pm_card_visa", "pm_" + "x" * 98, "pm_\x00"),
        "email": ("new@example.com", "a@b", "x" * 300 + "@example.com"),
        "password": ("correct horse battery staple",),
        "date_of_birth": ("1990-01-01", "1900-01-01", "2999-01-01"),
        "expiry_date": ("2030-01-01", "2000-01-01"),
        "service_level": ("95", "95%", "99.9", "50", "49.9"),
        "current": (DEFAULT_PASSWORD,),
        "code": ("000000", "123456"),
        "medicine_id": some_ids, "quantity": ("1", "28", "56", "0"), "counted": ("0", "28"),
        "new": ("a new password 123",), "confirm": ("a new password 123",),
        "given_name": ("Ann",), "family_name": ("Example",), "nhs_number": ("9434765919",),
        "lot_number": ("MATRIX", "LOT-2"), "client_action_id": ("c-1", "c-2", "c-3"),
        "role": ("pharmacist", "admin", "courier", "patient", "api_client"),
        "shift_start": ("09:00", "09:00", "24:00", "9", "09:00:00.5+01:00"),
        "shift_end": ("17:00", "17:00", "08:00", "23:59:60"),
        "full_name": ("Ann Example",),
        "vehicle": ("V0", "NEW1"),
        **{name: ("yes", "no") for name, _, _ in SAFETY_QUESTIONS},
        **{name: some_ids for name in ("entry_id", "slot_id", "address_id",
                                       "stop_id", "route_id", "suggestion", "remove",
                                       "nominated_pharmacy_id", "sync_day",
                                       "minimum_order_quantity")},
    }


PLAIN = ("Leeds", "1 Road", "LS1 1AA", "Ann", "damaged in transit", "07700 900123", "A1")


def _wild() -> st.SearchStrategy[str]:
    """Values a field should refuse with a message (or store as typed)."""
    numbers = st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )
    return st.one_of(st.sampled_from(NASTY), st.text(max_size=40), numbers,
                     st.text(min_size=1, max_size=3).map(lambda s: s * (LONG // len(s))))


@st.composite
def form_data(draw: st.DrawFn, names: tuple[str, ...], hints: dict[str, tuple[str, ...]],
              with_photo: bool) -> dict[str, Any]:
    """Each field left out, plausible (so that the next fields are reached), or wild; now
    and then sent twice."""
    data: dict[str, Any] = {}
    for name in names:
        # Hypothesis starts from the simplest choice (0): a plausible value.
        kind = draw(st.integers(0, 9))
        if kind == 8:
            continue  # a field left out
        values = (st.sampled_from(hints.get(name, PLAIN)) if kind <= 4 else _wild())
        data[name] = (draw(st.lists(values, min_size=2, max_size=3))
                      if kind == 9 else draw(values))
    extras = draw(st.dictionaries(
        st.one_of(st.text(max_size=30), st.sampled_from(["a[]", "a[b]", "__proto__", "x.y",
                                                         "csrf_token[]", "0", "\x00"])),
        _wild(), max_size=3))
    for name, value in extras.items():
        if name != "csrf_token" and name not in data:
            data[name] = value
    if with_photo and draw(st.booleans()):
        photo = draw(st.sampled_from([matrix.PNG, b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
                                      b"GIF89a", b"<svg/>"]) | st.binary(max_size=256))
        filename = draw(st.sampled_from(["photo.png", "", "../../x.png", "ph\x00oto.jpeg",
                                         "💊.webp", "a" * 300]))
        data["photo"] = (io.BytesIO(photo), filename or "x", "image/png")
    return data


# --- the fuzz -----------------------------------------------------------------------------------

_NAME = re.compile(r'<(?:input|select|textarea|button)\b[^>]*\bname="([^"]+)"')
_FORM = re.compile(r'<form\b[^>]*\baction="([^"]*)"[^>]*>(.*?)</form>', re.S)


def _form_names(client, page: str, action: str) -> set[str]:  # type: ignore[no-untyped-def]
    """The field names of the forms on ``page`` that post to ``action``."""
    body = client.get(page).get_data(as_text=True)
    names: set[str] = set()
    for target, inner in _FORM.findall(body):
        if html.unescape(target).split("?")[0] == action:
            names.update(html.unescape(n) for n in _NAME.findall(inner))
    return names - {"csrf_token"}


class _Errors(logging.Handler):
    """Keeps the tracebacks the app logs when it answers 500."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(self.format(r) for r in self.records)[-4000:]


@pytest.fixture()
def app_errors() -> Iterator[_Errors]:
    handler = _Errors()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger = logging.getLogger("pharmacy")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _objects(db, world) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The matrix's ids, with a draft purchase order (a line of the CD) for its forms."""
    ids = dict(world["ids"])
    pharmacy_id = db.session.get(DeliveryRoute, ids["route_id"]).wave.pharmacy_id
    po = PurchaseOrder(pharmacy_id=pharmacy_id, reference="PO-FUZZ-1", supplier="Wholesaler")
    po.lines.append(PurchaseOrderLine(medicine_id=ids["medicine_id"], quantity=10))
    db.session.add(po)
    db.session.commit()
    ids["po_id"], ids["line_id"] = po.id, po.lines[0].id
    return ids


def _reset(db, ids: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """Undo what the last example changed, so each one meets the forms' objects afresh: the
    route under way, its stop pending, the prescription verified, the purchase order a draft."""
    db.session.expire_all()
    db.session.get(DeliveryRoute, ids["route_id"]).started_at = utcnow()
    stop = db.session.get(DeliveryStop, ids["stop_id"])
    stop.status, stop.arrived_at, stop.completed_at = StopStatus.PENDING, None, None
    db.session.get(Prescription, ids["prescription_id"]).status = PrescriptionStatus.VERIFIED
    db.session.get(PurchaseOrder, ids["po_id"]).status = PurchaseOrderStatus.DRAFT
    db.session.commit()


def _rule(app: Flask, endpoint: str, method: str) -> str:
    return next(r.rule for r in app.url_map.iter_rules()
                if r.endpoint == endpoint and method in (r.methods or ()))


def _path(app: Flask, endpoint: str, ids: dict[str, Any]) -> tuple[str, dict[str, list[str]]]:
    """The route's path with the world's ids, and the choices of its <any(...)> parts."""
    rule = next(r for r in app.url_map.iter_rules()
                if r.endpoint == endpoint and "POST" in (r.methods or ()))
    ids = dict(ids)
    if endpoint.startswith("pharmacist.purchase_order"):
        ids["order_id"] = ids["po_id"]
    choices = {name: sorted(conv.items) for name, conv in rule._converters.items()
               if hasattr(conv, "items")}
    return rule.rule, {**{k: [str(v)] for k, v in ids.items()}, **choices}


def _signed_in(client, user) -> bool:  # type: ignore[no-untyped-def]
    """Still this user's session, with the CSRF secret our token was made from."""
    with client.session_transaction() as session:
        return session.get("uid") == user.id and "csrf_token" in session


def test_every_web_form_is_fuzzed(app: Flask) -> None:
    """A new page POST route needs its fields here (or a reason to be left out)."""
    posts = {e for e, m, r in matrix._routes(app) if m == "POST" and not r.startswith("/api/")}
    assert posts - set(SKIPPED) == set(FIELDS), (
        f"give these routes' fields: {sorted(posts - set(SKIPPED) - set(FIELDS))}; "
        f"no such route: {sorted(set(FIELDS) - posts)}")
    assert set(FORM_PAGES) <= set(FIELDS)
    fuzzed = {p.values[1] for p in _cases()}
    assert fuzzed == posts - set(SKIPPED), "a page POST route no page role may use?"


@pytest.mark.parametrize(("role", "endpoint"), _cases())
def test_web_form_never_answers_5xx(role: str, endpoint: str, app: Flask, client, db,  # type: ignore[no-untyped-def]
                                    world, app_errors: _Errors,
                                    request: pytest.FixtureRequest) -> None:
    from pharmacy.rate_limits import reset_rate_limits

    if endpoint in PAYMENTS:  # card payments configured as in production, against localstripe
        request.getfixturevalue("stripe_config")
    user = world["users"][role]
    assert web_login(client, user.email, DEFAULT_PASSWORD).status_code == 302
    ids = _objects(db, world)
    _reset(db, ids)
    rule, params = _path(app, endpoint, ids)
    names = set(FIELDS[endpoint])
    if endpoint in FORM_PAGES:  # the card payment's fields are posted by checkout.js
        page = matrix._path(_rule(app, FORM_PAGES[endpoint], "GET"),
                            {k: v[0] for k, v in params.items()})
        names |= _form_names(client, page, matrix._path(rule, {k: v[0] for k, v in
                                                              params.items()}))
    hints = _hints(ids)
    state = {"csrf": csrf_token(client, "/login")}
    variants = {name: params[name] for name in re.findall(r"<(?:[^:<>]+:)?([a-z_]+)>", rule)}

    examples = MORE_EXAMPLES.get(endpoint, MAX_EXAMPLES if names else MAX_EXAMPLES_NO_FIELDS)
    examples *= int(os.environ.get("FUZZ_SCALE", "1"))  # e.g. 10 for a longer hunt

    # A fixed seed per role × route (CI repeats the same examples, and each case its own);
    # FUZZ_RANDOM=1 explores new examples each run.
    fixed = os.environ.get("FUZZ_RANDOM") != "1"

    @given(choice=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in variants.items()}),
           data=form_data(tuple(sorted(names)), hints, with_photo=endpoint == "courier.action"))
    @seed(zlib.crc32(f"{role} {endpoint}".encode()) if fixed else None)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    def post(choice: dict[str, str], data: dict[str, Any]) -> None:
        reset_rate_limits(app)
        _reset(db, ids)
        if not _signed_in(client, user):  # a registration or password change signed in anew
            with client.session_transaction() as session:
                same_user = session.get("uid") == user.id
            if not same_user:
                assert web_login(client, user.email, DEFAULT_PASSWORD).status_code == 302
            state["csrf"] = csrf_token(client, "/login")
        if endpoint == "patient.place":  # a basket to check out (placing one empties it)
            with client.session_transaction() as session:
                session["basket"] = {f"rx:{ids['item_id']}": 1}
        app_errors.records.clear()
        path = matrix._path(rule, choice)
        response = client.post(path, data={**data, "csrf_token": state["csrf"]})
        shown = {k: (v if not isinstance(v, str) or len(v) <= 80 else f"{v[:40]!r}...×{len(v)}")
                 for k, v in data.items()}
        assert response.status_code < 500, (
            f"{role} POST {path} ({endpoint}) answered {response.status_code} to {shown!r}\n"
            f"{app_errors.text()}")
        if 400 <= response.status_code < 500:
            assert response.get_data(as_text=True).strip(), (
                f"{role} POST {path}: {response.status_code} with an empty body")

    post()
