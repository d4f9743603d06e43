# One image; web, worker, scheduler and migrations are different commands (see compose.yaml).
# Docker cannot run on the project's development machines, so this file is kept correct by
# reading; see README "Containers".
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DISPENSARY_ENV=production \
    FLASK_APP=wsgi.py

RUN groupadd --system dispensary && useradd --system --gid dispensary --home /app dispensary
WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml ./
RUN mkdir -p pharmacy routing inventory \
    && touch pharmacy/__init__.py routing/__init__.py inventory/__init__.py config.py wsgi.py \
    && pip install . && pip uninstall -y dispensary

COPY config.py wsgi.py gunicorn.conf.py ./
COPY pharmacy ./pharmacy
COPY routing ./routing
COPY inventory ./inventory
COPY migrations ./migrations
# The code runs from /app (on sys.path as the working directory), not from site-packages.
ENV PYTHONPATH=/app
RUN chown -R dispensary:dispensary /app \
    && install -d -o dispensary -g dispensary -m 0700 /var/lib/dispensary/delivery-photos
# Proof-of-delivery photos live outside the code and the web root (a volume in compose.yaml).
ENV DELIVERY_PHOTO_DIR=/var/lib/dispensary/delivery-photos

USER dispensary
EXPOSE 8000
# Migrations run once before web and workers start: `docker compose run --rm migrate`.
# gunicorn.conf.py: 2 gthread workers x 4 threads on port 8000 (WEB_CONCURRENCY, WEB_THREADS).
CMD ["gunicorn", "--config", "gunicorn.conf.py", "--access-logfile", "-", "wsgi:app"]
