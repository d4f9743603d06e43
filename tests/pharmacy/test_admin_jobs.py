"""The admins' view of background work: failed jobs can be seen and run again."""

from __future__ import annotations

from rq import Queue, SimpleWorker

from pharmacy.models import Role
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.pharmacy.helpers import csrf_token, web_login


def test_failed_jobs_are_listed_and_can_be_requeued(client, db, redis) -> None:  # type: ignore[no-untyped-def]
    queue = Queue("default", connection=redis)
    job = queue.enqueue("builtins.int", "not a number", job_id="broken-job")
    SimpleWorker([queue], connection=redis).work(burst=True)
    assert job.get_status(refresh=True) == "failed"

    admin = UserFactory(role=Role.ADMIN)
    db.session.commit()
    web_login(client, admin.email, DEFAULT_PASSWORD)
    page = client.get("/admin/jobs").get_data(as_text=True)
    assert "broken-job" in page and "ValueError" in page
    response = client.post("/admin/jobs/broken-job/requeue",
                           data={"csrf_token": csrf_token(client, "/admin/jobs")})
    assert response.status_code == 302
    assert job.get_status(refresh=True) == "queued"


def test_jobs_page_is_for_admins_only(client, db) -> None:  # type: ignore[no-untyped-def]
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    assert client.get("/admin/jobs").status_code == 403
