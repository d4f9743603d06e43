"""The published example bundles give their documented rule codes through the HTTP endpoint."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pharmacy.models import Role
from pharmacy.models.base import utcnow
from pharmacy.services.formulary import load_formulary
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.pharmacy.helpers import api_token

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "rx"
EXPECTED = {
    "valid-multi-item-with-allergy.json": ["valid"],
    "valid-cd2-quantity-words.json": ["valid"],
    "valid-repeat-nurse-prescriber.json": ["valid"],
    "invalid-nhs-number.json": ["patient-identifier-invalid"],
    "invalid-prescription-id.json": ["prescription-id-invalid"],
    "invalid-prescriber-gphc-number.json": ["prescriber-identifier-invalid"],
    "invalid-medication-code.json": ["medication-code-invalid"],
    "invalid-cd3-no-quantity-words.json": ["cd-quantity-words-missing"],
}


def shift_dates(text: str, today: date, written: date = date(2026, 11, 20)) -> str:
    """Move every date so that the day the examples were written becomes today."""
    delta = today - written
    return re.sub(r'"(\d{4}-\d{2}-\d{2})',
                  lambda m: '"' + (date.fromisoformat(m[1]) + delta).isoformat(), text)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_gives_its_documented_codes(client, db, name: str) -> None:  # type: ignore[no-untyped-def]
    load_formulary(db.session)
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    token = api_token(client, pharmacist.email, DEFAULT_PASSWORD)
    today = utcnow().astimezone(ZoneInfo("Europe/London")).date()
    body = shift_dates((EXAMPLES / name).read_text(encoding="utf-8"), today)
    response = client.post("/api/v1/prescriptions/$validate", data=body,
                           content_type="application/fhir+json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    outcome = response.get_json()
    codes = [issue["details"]["coding"][0]["code"] for issue in outcome["issue"]]
    assert codes == EXPECTED[name], outcome
    systems = {issue["details"]["coding"][0]["system"] for issue in outcome["issue"]}
    assert systems == {"urn:dispensary:rx-rule"}
