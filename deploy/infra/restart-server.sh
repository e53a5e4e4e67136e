#!/usr/bin/env bash
# Restarts one of the servers the infrastructure profile uses, however it was started
# on this machine, and waits until it accepts connections again: what
# `flotilla chaos run store-restart` runs.
#
# Usage: deploy/infra/restart-server.sh [--kill] postgresql|mariadb|redis|nats|etcd
#   default  a clean stop (SIGTERM; PostgreSQL's fast shutdown; Redis's SHUTDOWN, which
#            writes its AOF/RDB first), then a start with the same command line
#   --kill   SIGKILL instead: the server recovers from its own files (WAL, InnoDB redo
#            log, AOF, JetStream's store) as after a crash of the process
# Must run as root (or as the servers' user). Exits non-zero if the server is not
# running, cannot be stopped, or is not back within 60 s.
set -euo pipefail

signal=TERM
if [ "${1:-}" = "--kill" ]; then signal=KILL; shift; fi
server=${1:?usage: restart-server.sh [--kill] postgresql|mariadb|redis|nats|etcd}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_gone() { # wait_gone PID
  for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  echo "restart-server: pid $1 did not exit" >&2; return 1
}
wait_port() { # wait_port PORT
  for _ in $(seq 1 600); do port_open "$1" && return 0; sleep 0.1; done
  echo "restart-server: $server is not accepting connections on port $1 after 60 s" >&2; return 1
}
oldest() { pgrep -o -x "$1" || { echo "restart-server: no $1 process is running" >&2; return 1; }; }

# Stops PID and starts its command line again, from its working directory, as its user
# (for servers that keep their command line as given).
reexec() { # reexec PID PORT
  local pid=$1 port=$2 user cwd
  local -a argv
  mapfile -d '' -t argv <"/proc/$pid/cmdline"
  user=$(stat -c %U "/proc/$pid")
  cwd=$(readlink "/proc/$pid/cwd")
  kill "-$signal" "$pid"
  wait_gone "$pid"
  (cd "$cwd" && start-stop-daemon --start --background --chuid "$user" \
    --exec "$(readlink -f "${argv[0]}")" -- "${argv[@]:1}")
  wait_port "$port"
}

case $server in
  postgresql)
    read -r version cluster port _ _ datadir _ < <(pg_lsclusters -h | awk '$4 == "online" {print; exit}')
    [ -n "${version:-}" ] || { echo "restart-server: no online PostgreSQL cluster" >&2; exit 1; }
    if [ "$signal" = KILL ]; then
      pid=$(head -1 "$datadir/postmaster.pid")
      kill -KILL "$pid"; wait_gone "$pid"
      # The children notice their postmaster is gone and exit; start runs crash recovery.
      sleep 1
      pg_ctlcluster "$version" "$cluster" start
    else
      pg_ctlcluster "$version" "$cluster" restart -m fast
    fi
    wait_port "$port"
    ;;
  mariadb)
    pid=$(oldest mariadbd)
    reexec "$pid" 3306
    ;;
  nats)
    pid=$(oldest nats-server)
    reexec "$pid" 4222
    ;;
  etcd)
    pid=$(oldest etcd)
    reexec "$pid" 2379
    ;;
  redis)
    # Redis rewrites its process title, so its settings come from the server itself.
    pid=$(oldest redis-server)
    cli=(redis-cli -h 127.0.0.1 -p 6379)
    conf=$("${cli[@]}" INFO server | tr -d '\r' | sed -n 's/^config_file://p')
    get() { "${cli[@]}" CONFIG GET "$1" | sed -n 2p; }
    if [ -n "$conf" ]; then
      args=("$conf" --daemonize yes)
    else
      args=(--daemonize yes --port "$(get port)" --bind "$(get bind)" --dir "$(get dir)"
        --save "$(get save)" --appendonly "$(get appendonly)" --appendfsync "$(get appendfsync)"
        --dbfilename "$(get dbfilename)" --logfile "$(get logfile)")
    fi
    user=$(stat -c %U "/proc/$pid")
    # ACL users are lost on restart unless the server has an ACL file: kept here.
    mapfile -t acl < <("${cli[@]}" ACL LIST | tr -d '\r' | grep -v '^user default ')
    if [ "$signal" = KILL ]; then
      kill -KILL "$pid"
    else
      "${cli[@]}" SHUTDOWN >/dev/null 2>&1 || true
    fi
    wait_gone "$pid"
    start-stop-daemon --start --chuid "$user" --exec "$(command -v redis-server)" -- "${args[@]}"
    wait_port 6379
    for rule in "${acl[@]}"; do
      read -ra words <<<"${rule#user }"
      "${cli[@]}" ACL SETUSER "${words[@]}" >/dev/null
    done
    ;;
  *)
    echo "restart-server: unknown server $server (postgresql, mariadb, redis, nats, etcd)" >&2
    exit 64
    ;;
esac
echo "restart-server: $server restarted (SIG$signal)"
