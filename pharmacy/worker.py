"""Worker start-up: build the app once, push its context, and run an RQ worker.

    python -m pharmacy.worker [--burst] [QUEUE ...]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from rq import Worker

from . import create_app
from .extensions import db, get_redis
from .jobs import ALL_QUEUES

logger = logging.getLogger(__name__)


class AppWorker(Worker):
    """Releases the job's database session after every job, whatever happened in it."""

    def perform_job(self, job, queue, *args, **kwargs):  # type: ignore[no-untyped-def]
        import time

        from .metrics import JOB_SECONDS

        started, outcome = time.perf_counter(), "failed"
        try:
            result = super().perform_job(job, queue, *args, **kwargs)
            outcome = "finished" if result else "failed"
            return result
        finally:
            JOB_SECONDS.observe(time.perf_counter() - started, function=job.func_name,
                                outcome=outcome)
            db.session.remove()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pharmacy.worker")
    parser.add_argument("queues", nargs="*", default=list(ALL_QUEUES))
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--with-scheduler", action="store_true")
    args = parser.parse_args(argv)
    app = create_app()
    with app.app_context():
        from .jobs.outbox import relay_now

        relay_now()  # send whatever waited while Redis or the workers were down
        worker = AppWorker(args.queues, connection=get_redis(app))
        logger.info("worker %s listening on %s", worker.name, ", ".join(args.queues))
        worker.work(burst=args.burst, with_scheduler=args.with_scheduler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
