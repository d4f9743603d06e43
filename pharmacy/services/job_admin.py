"""What the admins see of background work: queues, workers, failed jobs, waiting messages."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..extensions import get_redis
from ..jobs import ALL_QUEUES
from ..models import OutboxMessage

logger = logging.getLogger(__name__)


@dataclass
class FailedJob:
    id: str
    queue: str
    function: str
    error: str


@dataclass
class JobsOverview:
    redis_ok: bool
    queues: dict[str, int] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)
    failed: list[FailedJob] = field(default_factory=list)
    waiting: list[OutboxMessage] = field(default_factory=list)


def overview(session: Session, *, limit: int = 50) -> JobsOverview:
    waiting = list(session.scalars(select(OutboxMessage).where(
        OutboxMessage.completed_at.is_(None)).order_by(OutboxMessage.id).limit(limit)))
    connection = get_redis()
    try:
        state = JobsOverview(True, waiting=waiting)
        for name in ALL_QUEUES:
            queue = Queue(name, connection=connection)
            state.queues[name] = queue.count
            registry = FailedJobRegistry(queue=queue)
            for job_id in registry.get_job_ids(0, limit - 1):
                job = Job.fetch(job_id, connection=connection)
                result = job.latest_result()
                error = (result.exc_string or "") if result is not None else ""
                state.failed.append(FailedJob(job_id, name, job.func_name or "?",
                                              error.strip().splitlines()[-1] if error else ""))
        state.workers = [w.name for w in Worker.all(connection=connection)]
        return state
    except RedisError:
        logger.warning("jobs overview: Redis unreachable", exc_info=True)
        return JobsOverview(False, waiting=waiting)


def requeue_failed(job_id: str) -> bool:
    connection = get_redis()
    for name in ALL_QUEUES:
        registry = FailedJobRegistry(queue=Queue(name, connection=connection))
        if job_id in registry.get_job_ids():
            registry.requeue(job_id)
            return True
    return False
