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
# Worker heartbeat timeout (gthread workers keep beating while a request waits).
timeout = 60
graceful_timeout = 20
keepalive = 5
