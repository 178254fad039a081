#!/usr/bin/env bash
# A throwaway PostgreSQL for tests and benches: Debian's `postgresql`
# package (installed if absent), one cluster in DIR, listening on loopback
# only, stopped by `stop` or, with KILN_PG_WATCH=<pid>, when that process
# ends (a test binary cannot run code at exit, so the server watches it).
#
#   scripts/pg.sh start DIR PORT   # PORT 0: a free port is picked
#   scripts/pg.sh stop DIR [PORT]
#
# `start` prints `port=N`, `pid=N` and `url=postgres://...` lines on stdout
# and exits 0 once the server accepts connections; anything else is a
# failure, with the server's log on stderr. The superuser is `kiln`, its
# password KILN_PG_PASSWORD (default `kiln`), asked for on TCP (scram).
# KILN_PG_CLEAN=1 (with KILN_PG_WATCH) removes DIR after that stop.
# KILN_PG_FAST=1 turns fsync off (tests only: a crash loses the cluster).
# KILN_PG_TLS=1 serves TLS with a certificate for 127.0.0.1 and localhost,
# signed by a throwaway CA whose certificate `start` names in a `ca=PATH`
# line (for sslmode=verify-full&sslrootcert=PATH).
# initdb refuses to run as root: as root, DIR is given to user `postgres`
# and the server runs as that user.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2 port=${3:-0}

bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$found" ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      found=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    else
      echo "PostgreSQL is not installed (apt-get install postgresql, as root)" >&2
      exit 1
    fi
  fi
  echo "$found"
}

# Runs a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case $cmd in
start)
  bin=$(bindir)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$port" = 0 ] && port=$(free_port)
  password=${KILN_PG_PASSWORD:-kiln}
  printf '%s\n' "$password" > "$dir/pwfile"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir"; fi
  chmod 700 "$dir"
  if [ ! -e "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -U kiln --pwfile="$dir/pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  rm -f "$dir/pwfile"
  opts="-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200"
  if [ "${KILN_PG_TLS:-0}" = 1 ]; then
    tls="$dir/tls"
    if [ ! -e "$tls/server.pem" ]; then
      mkdir -p "$tls"
      openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=kiln test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" >/dev/null 2>&1
      openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$tls/server.key" -out "$tls/server.csr" >/dev/null 2>&1
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$tls/ext"
      openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 7 -extfile "$tls/ext" -out "$tls/server.pem" >/dev/null 2>&1
      chmod 600 "$tls/server.key"
      if [ "$(id -u)" = 0 ]; then chown -R postgres: "$tls"; fi
    fi
    opts="$opts -c ssl=on -c ssl_cert_file=$tls/server.pem -c ssl_key_file=$tls/server.key"
  fi
  [ "${KILN_PG_FAST:-0}" = 1 ] && opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  pid=$(head -1 "$dir/data/postmaster.pid")
  if [ -n "${KILN_PG_WATCH:-}" ]; then
    # Stops the server once the watched process is gone.
    # With KILN_PG_CLEAN=1 the directory goes too.
    clean=""
    [ "${KILN_PG_CLEAN:-0}" = 1 ] && clean="rm -rf '$dir'"
    nohup setsid bash -c "while kill -0 $KILN_PG_WATCH 2>/dev/null; do sleep 1; done; kill -INT $pid;
      while kill -0 $pid 2>/dev/null; do sleep 0.2; done; $clean" >/dev/null 2>&1 &
  fi
  echo "port=$port"
  echo "pid=$pid"
  echo "url=postgres://kiln@127.0.0.1:$port/postgres?sslmode=disable"
  if [ "${KILN_PG_TLS:-0}" = 1 ]; then echo "ca=$dir/tls/ca.pem"; fi
  ;;
stop)
  bin=$(bindir)
  [ -e "$dir/data/postmaster.pid" ] || exit 0
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
*) usage ;;
esac
