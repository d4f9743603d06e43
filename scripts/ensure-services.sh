#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis that the tests use answer on 127.0.0.1.
# Uses running ones; else starts installed ones; else installs them with apt-get (as root).
set -euo pipefail

need_root() { [ "$(id -u)" = 0 ] || { echo "need root to $1" >&2; exit 1; }; }
apt_updated=0
apt_install() {
  need_root "install $*"
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! command -v pg_isready >/dev/null || ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "Installing PostgreSQL..."
    apt_install postgresql
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  echo "Starting PostgreSQL $version..."
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster "$version" main start
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "PostgreSQL did not start" >&2; exit 1; }
fi
# A fresh Debian cluster wants a password over TCP; the tests use postgres/postgres
# (ignored where the cluster trusts local connections, as on the CI machines).
if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  need_root "set the postgres password"
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
fi

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! command -v redis-cli >/dev/null || ! redis_up; then
  command -v redis-server >/dev/null || { echo "Installing Redis..."; apt_install redis-server; }
  echo "Starting Redis..."
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
    --dir /tmp >/dev/null
  for _ in $(seq 1 20); do redis_up && break; sleep 0.5; done
  redis_up || { echo "Redis did not start" >&2; exit 1; }
fi
# Headless Chromium for the browser tests (Debian's package; Playwright never downloads one).
if [ ! -x /usr/bin/chromium ]; then
  echo "Installing Chromium..."
  apt_install chromium
fi
echo "PostgreSQL, Redis and Chromium are ready."
