#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh into the empty database at DATABASE_URL.
#   scripts/restore.sh FILE
set -euo pipefail
url="${DATABASE_URL:?set DATABASE_URL (postgresql://...) of an empty database}"
url="${url/postgresql+psycopg:/postgresql:}"
file="${1:?which backup file?}"
pg_restore --no-owner --no-privileges --exit-on-error --single-transaction --dbname "$url" "$file"
echo "restored $file"
echo "if the application already ran against this database's Redis: flask clear-caches" >&2
