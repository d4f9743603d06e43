"""Periodic jobs, declared once. Run with ``rq cron pharmacy.jobs.schedule`` (see README)."""

from rq import cron

from . import DEFAULT_QUEUE, FORECASTING_QUEUE
from .accounts import purge_pending_registrations
from .deliveries import close_due_waves, expire_delivery_photos
from .forecasts import refresh_reorder_suggestions
from .orders import expire_lapsed_prescriptions, release_unpaid_orders
from .outbox import relay_outbox
from .reminders import queue_repeat_reminders, send_notifications
from .stock import expire_stock, seal_audit_trail

# 00:05 UTC every day: batches that expired yesterday become unusable.
cron.register(expire_stock, DEFAULT_QUEUE, cron="5 0 * * *", job_timeout=300,
              name="expire-stock")
# 00:20 UTC every day: prescriptions past their legal validity expire (verified ones, and
# ones still waiting for a check or an answer).
cron.register(expire_lapsed_prescriptions, DEFAULT_QUEUE, cron="20 0 * * *", job_timeout=900,
              name="expire-prescriptions")
# 07:00 UTC every day: reminders for repeats that became orderable; mail goes every 5 minutes.
cron.register(queue_repeat_reminders, DEFAULT_QUEUE, cron="0 7 * * *", job_timeout=600,
              name="repeat-reminders")
cron.register(send_notifications, DEFAULT_QUEUE, cron="*/5 * * * *", job_timeout=300,
              name="send-notifications")
# Every 5 minutes: unpaid orders past their hold give their stock and slot back.
cron.register(release_unpaid_orders, DEFAULT_QUEUE, cron="*/5 * * * *", job_timeout=300,
              name="release-unpaid-orders")
# 01:30 UTC every day: forecasts and reorder suggestions (its own queue: it takes minutes).
cron.register(refresh_reorder_suggestions, FORECASTING_QUEUE, cron="30 1 * * *",
              job_timeout=3600, name="reorder-suggestions")
# Every minute: close waves at their cut-off, and relay/reconcile the outbox.
cron.register(close_due_waves, DEFAULT_QUEUE, cron="* * * * *", job_timeout=120,
              name="close-due-waves")
cron.register(relay_outbox, DEFAULT_QUEUE, cron="* * * * *", job_timeout=120,
              name="relay-outbox")
# Every 5 minutes: seal the audit events written since (the tamper-evident chain).
cron.register(seal_audit_trail, DEFAULT_QUEUE, cron="*/5 * * * *", job_timeout=600,
              name="seal-audit-trail")
# 03:15 UTC every day: proof-of-delivery photos past DELIVERY_PHOTO_RETENTION_DAYS go.
cron.register(expire_delivery_photos, DEFAULT_QUEUE, cron="15 3 * * *", job_timeout=600,
              name="expire-delivery-photos")
# 02:10 UTC every day: registrations whose link expired unopened are forgotten.
cron.register(purge_pending_registrations, DEFAULT_QUEUE, cron="10 2 * * *", job_timeout=300,
              name="purge-pending-registrations")
