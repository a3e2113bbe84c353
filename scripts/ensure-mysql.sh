#!/usr/bin/env bash
# Makes sure the database the projector tests use answers at $MYSQL_URL
# (default mysql://root@127.0.0.1:3306/test), saying what it did:
#   1. a server already answers: use it;
#   2. MariaDB is installed but not running: start it;
#   3. not installed: install Debian's mariadb-server (apt-get, as root), start it;
#   4. none of that possible: fail with what to install.
# Only a local server (127.0.0.1 / localhost) is ever started or installed.
# KEEL_MARIADB_DATADIR and KEEL_MARIADB_SOCKET choose where a started
# server keeps its data and socket (default: Debian's).
set -euo pipefail

datadir="${KEEL_MARIADB_DATADIR:-/var/lib/mysql}"
socket="${KEEL_MARIADB_SOCKET:-/run/mysqld/mysqld.sock}"

url="${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
rest="${url#*://}"
credentials=""
if [[ "$rest" == *@* ]]; then
  credentials="${rest%@*}"
  rest="${rest##*@}"
fi
user="${credentials%%:*}"
password=""
[[ "$credentials" == *:* ]] && password="${credentials#*:}"
hostport="${rest%%/*}"
database="${rest#*/}"
database="${database%%\?*}"
host="${hostport%%:*}"
port="3306"
[[ "$hostport" == *:* ]] && port="${hostport##*:}"

say() { printf 'ensure-mysql: %s\n' "$*"; }

answers() {
  if command -v mariadb-admin >/dev/null 2>&1; then admin=mariadb-admin
  elif command -v mysqladmin >/dev/null 2>&1; then admin=mysqladmin
  else
    # No client tools: a TCP connect is the best check there is.
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
    return
  fi
  "$admin" --protocol=TCP -h "$host" -P "$port" -u "${user:-root}" ${password:+-p"$password"} \
    --connect-timeout=2 ping >/dev/null 2>&1
}

wait_until_answers() {
  for _ in $(seq 1 60); do
    answers && return 0
    sleep 1
  done
  return 1
}

ensure_database() {
  local client
  client=$(command -v mariadb || command -v mysql || true)
  [[ -z "$client" || -z "$database" ]] && return 0
  "$client" --protocol=TCP -h "$host" -P "$port" -u "${user:-root}" ${password:+-p"$password"} \
    -e "CREATE DATABASE IF NOT EXISTS \`$database\`" >/dev/null
}

if answers; then
  say "a server answers at $host:$port; using it"
  ensure_database
  exit 0
fi

if [[ "$host" != "127.0.0.1" && "$host" != "localhost" ]]; then
  say "nothing answers at $host:$port (MYSQL_URL); start that server or point MYSQL_URL at one"
  exit 1
fi

if ! command -v mariadbd >/dev/null 2>&1 && [[ ! -x /usr/sbin/mariadbd ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "no MariaDB here: installing Debian's mariadb-server with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >/dev/null; }
  else
    say "no server at $host:$port and MariaDB is not installed; install it (Debian/Ubuntu: sudo apt-get install mariadb-server) or set MYSQL_URL to a running MariaDB/MySQL"
    exit 1
  fi
fi

if [[ ! -d "$datadir/mysql" ]]; then
  say "initialising a data directory in $datadir"
  mariadb-install-db --user=mysql --datadir="$datadir" >/dev/null 2>&1 ||
    mysql_install_db --user=mysql --datadir="$datadir" >/dev/null
fi
socket_dir="$(dirname "$socket")"
if [[ ! -d "$socket_dir" ]]; then
  mkdir -p "$socket_dir" && chown mysql:mysql "$socket_dir"
fi
say "starting MariaDB (mariadbd) on $host:$port, data in $datadir"
args=(--user=mysql --port="$port" --datadir="$datadir" --socket="$socket" --bind-address=127.0.0.1)
if command -v start-stop-daemon >/dev/null 2>&1; then
  start-stop-daemon --start --background --make-pidfile --pidfile "$datadir/ensure-mysql.pid" \
    --exec /usr/sbin/mariadbd -- "${args[@]}"
else
  (/usr/sbin/mariadbd "${args[@]}" >/tmp/mariadbd.log 2>&1 &)
fi
for _ in $(seq 1 60); do
  mariadb-admin --socket="$socket" -u root --connect-timeout=2 ping >/dev/null 2>&1 && break
  sleep 1
done
# A fresh Debian install lets root in only over the Unix socket (and,
# with skip-name-resolve, 127.0.0.1 is not 'localhost'): allow the
# empty-password TCP login the tests use, on this throwaway local server.
if [[ "${user:-root}" == "root" && -z "$password" ]]; then
  mariadb --socket="$socket" -u root -e "
    CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
    ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;" \
    >/dev/null 2>&1 || say "could not open root's TCP login (it may already be open)"
fi
if ! wait_until_answers; then
  say "MariaDB did not come up within 60 s (see its error log, e.g. /var/log/mysql/error.log)"
  exit 1
fi
ensure_database
say "MariaDB started and answers at $host:$port"
