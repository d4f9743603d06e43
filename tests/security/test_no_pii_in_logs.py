"""Patient data never reaches the logs, even at DEBUG.

Drives the flows that handle personal data (registration, sign-in with right and wrong
passwords, a prescription with the patient's name and NHS number, a validation that finds
problems) with every logger at DEBUG through the app's own JSON formatter, then looks for
each personal value in everything that was written.
"""

from __future__ import annotations

import io
import json
import logging

from pharmacy.log import ContextFilter, JsonFormatter
from pharmacy.models import Role
from pharmacy.services.formulary import load_formulary
from tests.factories import DEFAULT_PASSWORD, PharmacyFactory, UserFactory
from tests.pharmacy.fhir_factory import AMLODIPINE_5, SIMVASTATIN_40, bundle
from tests.pharmacy.helpers import api_token, csrf_token, register_and_confirm

PATIENT = {"given_name": "Philippa", "family_name": "Quennell", "date_of_birth": "1958-02-04",
           "nhs_number": "943 476 5919", "email": "philippa.quennell@example.com",
           "password": "correct horse battery staple", "terms": "yes", "privacy": "yes"}
# Built at run time so that no traceback's source line shows it.
NAME = " ".join([PATIENT["given_name"], PATIENT["family_name"]])
SECRETS = ["Philippa", "Quennell", "9434765919", "943 476 5919", "philippa.quennell",
           "correct horse battery staple", "wrong horse battery staple", "Tess", "Testpatient",
           "Okafor", "1961-04-12", "1958-02-04"]


def test_no_personal_data_in_the_logs(app, client, db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(app.config, "GEOCODER", "none")
    PharmacyFactory()
    load_formulary(db.session)
    eps = UserFactory(role=Role.API_CLIENT)
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        assert register_and_confirm(client, db, PATIENT).status_code == 302
        client.post("/logout", data={"csrf_token": csrf_token(client, "/patient/")})
        wrong = client.post("/api/v1/auth/token", json={
            "email": PATIENT["email"], "password": "wrong horse battery staple"})
        assert wrong.status_code == 401
        assert api_token(client, PATIENT["email"], PATIENT["password"])
        # A value the database refuses: its error (and any traceback) must not carry it.
        refused = client.post("/api/v1/auth/token", json={
            "email": "philippa.quennell\u0000@example.com", "password": "x"})
        assert refused.status_code in (401, 422)
        with app.app_context():
            from sqlalchemy import text

            from pharmacy.extensions import db as app_db

            try:
                app_db.session.execute(text("SELECT CAST(:v AS integer)"), {"v": NAME})
            except Exception:  # noqa: BLE001 - logged as the app logs unhandled errors
                logging.getLogger("pharmacy.errors").exception("unhandled error")
            app_db.session.rollback()

        headers = {"Authorization": f"Bearer {api_token(client, eps.email, DEFAULT_PASSWORD)}"}
        document = bundle(AMLODIPINE_5, nhs="9434765919")
        sent = client.post("/api/v1/prescriptions", data=json.dumps(document),
                           content_type="application/fhir+json", headers=headers)
        assert sent.status_code == 201, sent.get_json()
        staff = {"Authorization":
                 f"Bearer {api_token(client, pharmacist.email, DEFAULT_PASSWORD)}"}
        bad = bundle(SIMVASTATIN_40, nhs="9434765918")  # a wrong check digit: a finding
        checked = client.post("/api/v1/prescriptions/$validate", data=json.dumps(bad),
                              content_type="application/fhir+json", headers=staff)
        assert checked.status_code == 200
        queue = client.get("/api/v1/prescriptions", headers=staff)
        assert queue.status_code == 200
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    written = stream.getvalue()
    assert "Traceback" in written, "the unhandled error's traceback should be in the logs"
    leaked = [value for value in SECRETS if value.lower() in written.lower()]
    assert not leaked, f"personal data in the logs: {leaked}\n{written[:3000]}"


def test_a_failed_job_is_logged_without_database_values(app, db, caplog) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from sqlalchemy import text

    from pharmacy.extensions import db as app_db
    from pharmacy.worker import AppWorker

    try:
        app_db.session.execute(text("SELECT CAST(:v AS integer)"), {"v": NAME})
    except Exception as exc:  # noqa: BLE001 - the failure a job would raise
        exc_info = (type(exc), exc, exc.__traceback__)
    app_db.session.rollback()
    worker = SimpleNamespace(name="w1", _exc_handlers=[], log=logging.getLogger("rq.worker"))
    job = SimpleNamespace(id="job-1", func_name="pharmacy.jobs.x", origin="default")
    with caplog.at_level(logging.ERROR, logger="rq.worker"):
        AppWorker.handle_exception(worker, job, *exc_info)  # type: ignore[arg-type]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "job-1" in logged and "DataError" in logged
    assert "Philippa" not in logged and "Quennell" not in logged
