#!/usr/bin/env bash
# Creates what the infrastructure profile (flotilla.infra.toml) needs on this machine's
# servers: a PostgreSQL database and login role per service (auth, users, orders,
# notifications, analytics), a MariaDB database and user for payments, and Redis ACL
# users for inventory and the gateway limited to their own keys. Idempotent.
#
# Usage: deploy/infra/create-databases.sh [--fresh]
#   --fresh  drop the services' databases (and their Redis keys) first: a clean system.
# Environment: PGHOST/PGPORT/PGUSER (default 127.0.0.1, 5432, postgres), MARIADB_HOST/
# MARIADB_PORT/MARIADB_USER (127.0.0.1, 3306, root), REDIS_HOST/REDIS_PORT (127.0.0.1,
# 6379), FLOTILLA_DB_PASSWORD (flotilla, the development password the profile uses).
set -euo pipefail

fresh=0
[ "${1:-}" = "--fresh" ] && fresh=1
password=${FLOTILLA_DB_PASSWORD:-flotilla}
pg=(env PGOPTIONS=--client-min-messages=warning psql -h "${PGHOST:-127.0.0.1}" -p "${PGPORT:-5432}" -U "${PGUSER:-postgres}" -d postgres -v ON_ERROR_STOP=1 -qtA)
my=(mariadb -h "${MARIADB_HOST:-127.0.0.1}" -P "${MARIADB_PORT:-3306}" -u "${MARIADB_USER:-root}")
rd=(redis-cli -h "${REDIS_HOST:-127.0.0.1}" -p "${REDIS_PORT:-6379}")

for svc in auth users orders notifications analytics; do
  db=flotilla_$svc
  if [ "$fresh" = 1 ]; then
    "${pg[@]}" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  fi
  if [ -z "$("${pg[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$db'")" ]; then
    "${pg[@]}" -c "CREATE ROLE $db LOGIN PASSWORD '$password'"
  else
    "${pg[@]}" -c "ALTER ROLE $db LOGIN PASSWORD '$password'"
  fi
  if [ -z "$("${pg[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
    "${pg[@]}" -c "CREATE DATABASE $db OWNER $db"
  fi
  # Only its owner may connect: one service cannot read another's data.
  "${pg[@]}" -c "REVOKE ALL ON DATABASE $db FROM PUBLIC"
  echo "postgresql: database $db, role $db"
done

db=flotilla_payments
if [ "$fresh" = 1 ]; then
  "${my[@]}" -e "DROP DATABASE IF EXISTS $db"
fi
"${my[@]}" -e "
  CREATE DATABASE IF NOT EXISTS $db;
  CREATE USER IF NOT EXISTS '$db'@'127.0.0.1' IDENTIFIED BY '$password';
  CREATE USER IF NOT EXISTS '$db'@'localhost' IDENTIFIED BY '$password';
  ALTER USER '$db'@'127.0.0.1' IDENTIFIED BY '$password';
  ALTER USER '$db'@'localhost' IDENTIFIED BY '$password';
  GRANT ALL PRIVILEGES ON $db.* TO '$db'@'127.0.0.1';
  GRANT ALL PRIVILEGES ON $db.* TO '$db'@'localhost';
  FLUSH PRIVILEGES;"
echo "mariadb: database $db, user $db"

# ACL users last only as long as the server unless it has an ACL file; running this
# again after a Redis restart without one re-creates them.
redis_user() { # redis_user NAME KEY_PATTERN
  if [ "$fresh" = 1 ]; then
    "${rd[@]}" --scan --pattern "$2" | xargs -r -n 500 "${rd[@]}" DEL >/dev/null
  fi
  "${rd[@]}" ACL SETUSER "$1" reset on ">$password" "~$2" '+@all' '-@dangerous' '+info' >/dev/null
  echo "redis: user $1, keys $2"
}
# Inventory keeps stock in Redis: a store of record needs its append-only file (fsync
# every second) so a restart does not lose it.
if [ "$("${rd[@]}" CONFIG GET appendonly | sed -n 2p)" != yes ]; then
  "${rd[@]}" CONFIG SET appendonly yes >/dev/null
  "${rd[@]}" CONFIG SET appendfsync everysec >/dev/null
  echo "redis: append-only file turned on (appendfsync everysec)"
fi
redis_user flotilla_inventory 'flotilla:inventory:*'
redis_user flotilla_gateway 'flotilla:ratelimit:*'
