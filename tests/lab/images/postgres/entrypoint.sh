#!/bin/bash
# First start: initdb (password from POSTGRES_PASSWORD through a file, never argv), local
# connections trusted and TCP with scram, like the official image; then create POSTGRES_DB.
set -euo pipefail
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=signer}"
mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$PGDATA" /run/postgresql
chmod 0700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp); chown postgres "$pwfile"
  printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > "$pwfile"
  runuser -u postgres -- initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
    --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "CREATE DATABASE \"$POSTGRES_DB\";" \
    | runuser -u postgres -- postgres --single -D "$PGDATA" -j template1 >/dev/null
fi
exec runuser -u postgres -- "$@" -D "$PGDATA" -c listen_addresses='*'
