"""The pharmacist's pages and the admin's audit trail, through the Flask test client."""

from __future__ import annotations

import re

from sqlalchemy import select

from pharmacy.models import Prescription, PrescriptionStatus, Role
from pharmacy.services.formulary import load_formulary
from pharmacy.services.prescriptions import receive_prescription
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.pharmacy.fhir_factory import CLARITHROMYCIN_500, SIMVASTATIN_40, bundle
from tests.pharmacy.helpers import csrf_token, web_login


def _interaction_prescription(db) -> Prescription:  # type: ignore[no-untyped-def]
    load_formulary(db.session)
    eps = UserFactory(role=Role.API_CLIENT)
    intake = receive_prescription(db.session, bundle(SIMVASTATIN_40, CLARITHROMYCIN_500),
                                  actor=eps)
    db.session.commit()
    return intake.prescription


def test_queue_and_detail_show_findings_by_severity(client, db) -> None:  # type: ignore[no-untyped-def]
    rx = _interaction_prescription(db)
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    queue = client.get("/pharmacist/prescriptions").get_data(as_text=True)
    assert f"/pharmacist/prescriptions/{rx.id}" in queue
    assert "warning(s)" in queue
    page = client.get(f"/pharmacist/prescriptions/{rx.id}").get_data(as_text=True)
    assert 'class="finding sev-warning" data-rule="interaction"' in page
    assert "Simvastatin 40mg tablets" in page and "Original FHIR message" in page
    assert "Testpatient" in page  # the patient panel


def test_verify_form_requires_a_reason_per_warning(client, db) -> None:  # type: ignore[no-untyped-def]
    rx = _interaction_prescription(db)
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    path = f"/pharmacist/prescriptions/{rx.id}"
    token = csrf_token(client, path)
    refused = client.post(f"{path}/verify", data={"csrf_token": token})
    assert refused.status_code == 422
    assert "Every warning needs a recorded decision" in refused.get_data(as_text=True)

    page = client.get(path).get_data(as_text=True)
    fields = re.findall(r'name="(decision-issue-\d+)"', page)
    assert fields
    data = {name: "Statin paused for the antibiotic course" for name in fields}
    done = client.post(f"{path}/verify", data={"csrf_token": csrf_token(client, path), **data})
    assert done.status_code == 302
    db.session.expire_all()
    assert db.session.get(Prescription, rx.id).status is PrescriptionStatus.VERIFIED


def test_action_without_csrf_changes_nothing(client, db) -> None:  # type: ignore[no-untyped-def]
    rx = _interaction_prescription(db)
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    response = client.post(f"/pharmacist/prescriptions/{rx.id}/reject", data={"reason": "x"})
    assert response.status_code == 400
    db.session.expire_all()
    assert db.session.get(Prescription, rx.id).status is PrescriptionStatus.AWAITING_VERIFICATION


def test_other_roles_cannot_open_prescriptions(client, db) -> None:  # type: ignore[no-untyped-def]
    rx = _interaction_prescription(db)
    courier = UserFactory(role=Role.COURIER)
    db.session.commit()
    web_login(client, courier.email, DEFAULT_PASSWORD)
    assert client.get(f"/pharmacist/prescriptions/{rx.id}").status_code == 403


def test_admin_audit_trail_filters(client, db) -> None:  # type: ignore[no-untyped-def]
    _interaction_prescription(db)
    admin = UserFactory(role=Role.ADMIN)
    db.session.commit()
    web_login(client, admin.email, DEFAULT_PASSWORD)
    everything = client.get("/admin/audit").get_data(as_text=True)
    assert "prescription.received" in everything and "user.login" in everything
    only_rx = client.get("/admin/audit?entity_type=prescription").get_data(as_text=True)
    assert "prescription.queued" in only_rx and "user.login" not in only_rx
    by_action = client.get("/admin/audit?action=user.").get_data(as_text=True)
    assert "prescription.received" not in by_action
    by_actor = client.get(f"/admin/audit?actor={admin.email}").get_data(as_text=True)
    assert "user.login" in by_actor and "prescription.received" not in by_actor
    bad = client.get("/admin/audit?since=yesterday")
    assert bad.status_code == 400 and "is not a date" in bad.get_data(as_text=True)
    assert db.session.scalars(select(Prescription)).first() is not None
