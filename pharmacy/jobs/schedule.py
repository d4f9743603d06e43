"""Periodic jobs, declared once. Run with ``rq cron pharmacy.jobs.schedule`` (see README)."""

from rq import cron

from . import DEFAULT_QUEUE
from .stock import expire_stock

# 00:05 UTC every day: batches that expired yesterday become unusable.
cron.register(expire_stock, DEFAULT_QUEUE, cron="5 0 * * *", job_timeout=300,
              name="expire-stock")
