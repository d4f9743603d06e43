"""How long the outbox's jobs are retried: the job that e-mails a registration link (nothing
else keeps it) rides out a mail relay's outage of about two hours; others the default six
minutes."""

from __future__ import annotations

from rq.job import Job

from pharmacy.services import outbox


def test_a_link_mail_is_retried_for_hours_and_other_jobs_for_minutes(db, redis) -> None:  # type: ignore[no-untyped-def]
    mail = outbox.add(db.session, key="registration-mail:t1",
                      function="pharmacy.jobs.accounts.send_registration_mail", args=[1])
    other = outbox.add(db.session, key="plan:t1", function="pharmacy.jobs.deliveries.plan_wave",
                       args=[1, 0])
    assert outbox.relay(db.session, redis) == 2
    db.session.commit()
    sent = Job.fetch(outbox.job_id(mail), connection=redis)
    assert sent.retries_left == 7 and sum(sent.retry_intervals or []) >= 2 * 3600
    plain = Job.fetch(outbox.job_id(other), connection=redis)
    assert plain.retries_left == 3 and sum(plain.retry_intervals or []) < 600
