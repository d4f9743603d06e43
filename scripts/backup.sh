#!/usr/bin/env bash
# Back up the database: a compressed, consistent pg_dump (custom format) of DATABASE_URL.
#   scripts/backup.sh [FILE]          default: backups/dispensary-<UTC time>.dump
# Restore with scripts/restore.sh FILE into an EMPTY database (see README, "Backup").
set -euo pipefail
url="${DATABASE_URL:?set DATABASE_URL (postgresql://...)}"
url="${url/postgresql+psycopg:/postgresql:}"
file="${1:-backups/dispensary-$(date -u +%Y%m%dT%H%M%SZ).dump}"
mkdir -p "$(dirname "$file")"
pg_dump --format=custom --no-owner --no-privileges --file "$file" "$url"
echo "$file"
