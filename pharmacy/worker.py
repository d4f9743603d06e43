"""Worker start-up: build the app once, push its context, and run an RQ worker.

    python -m pharmacy.worker [--burst] [QUEUE ...]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from rq import Worker

from . import create_app
from .extensions import get_redis, release_session
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
            release_session()


    def handle_exception(self, job, *exc_info):  # type: ignore[no-untyped-def]
        """Log a failed job as RQ does, with a traceback that keeps database values out."""
        from rq.job_lifecycle import call_exception_handlers

        from .log import safe_exception_text

        self.log.error("Worker %s: job %s: exception raised while executing (%s)\n%s",
                       self.name, job.id, job.func_name, safe_exception_text(exc_info[1]),
                       extra={"queue": job.origin, "job_id": job.id})
        call_exception_handlers(self._exc_handlers, job, *exc_info)


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
