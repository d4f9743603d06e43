"""gunicorn settings for the web process (read from the working directory by default).

Each worker is a process with a few threads: a request waiting on PostgreSQL, Redis or
Stripe leaves the worker's other threads free to run, so two workers on two cores keep
both cores busy. Overridable from the environment (WEB_CONCURRENCY, WEB_THREADS, PORT).
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
# Access-log lines show a reset or registration link's path with its token redacted.
logger_class = "pharmacy.access_log.RedactingAccessLogger"
# Worker heartbeat timeout (gthread workers keep beating while a request waits).
timeout = 60
graceful_timeout = 20
keepalive = 5

# Prometheus: the workers' request metrics are added up across processes (prometheus_client
# multiprocess mode) in a directory of this run's own, removed when gunicorn stops.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="dispensary-metrics-")
    _own_metrics_dir = True
else:
    _own_metrics_dir = False


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    if _own_metrics_dir:
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
