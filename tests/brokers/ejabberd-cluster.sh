#!/bin/bash
# A 3-node ejabberd (mod_mqtt) cluster on 127.0.0.1, for tests/tests/relay_cluster.rs.
#
#   BASE=DIR PORTS="P1 P2 P3" ejabberd-cluster.sh start   MQTT of node i on the i-th port
#   BASE=DIR ejabberd-cluster.sh kill I                   kill -9 node I (1-3)
#   BASE=DIR ejabberd-cluster.sh stop                     stops every node still alive
#
# Facts it relies on (checked with ejabberd 23.01 on Debian 12):
# - `ejabberdctl` runs only as root or as the user `ejabberd` (as root it re-execs
#   itself as `ejabberd` with su), so BASE is chowned to that user; not root, this
#   script uses `sudo -n`.
# - Node names (ejabberdI@127.0.0.1) and epmd are per machine: one cluster at a time.
# - Anonymous auth: MQTT clients still need a non-empty username and password, else
#   CONNACK 135 (not authorized).
# - `ejabberdctl start` returns at once (-detached): wait for the MQTT ports; a joined
#   node restarts its listeners, so wait again after join_cluster.
# - `ejabberdctl stop` returns before the VM has exited: SIGTERM the VM (a graceful
#   shutdown) and wait for it.
# Everything binds 127.0.0.1: MQTT listeners, Erlang distribution, epmd.
set -euo pipefail
BASE=${BASE:?set BASE to an empty folder}
COOKIE=${COOKIE:-tethertestcookie}
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo -n)
ctl() {
  local i=$1; shift
  "${sudo[@]}" ejabberdctl --config-dir "$BASE/n$i" --spool "$BASE/n$i/db" --logs "$BASE/n$i/logs" "$@"
}
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${s#Z}" = "$s" ]; } # a zombie is dead
wait_port() {
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "ejabberd-cluster: port $1 not up" >&2
  return 1
}
pid_of() { cat "$BASE/n$1/ejabberd.pid" 2>/dev/null; }
case "${1:-}" in
start)
  read -r -a ports <<<"${PORTS:?set PORTS to three free ports}"
  [ "${#ports[@]}" = 3 ] || { echo "ejabberd-cluster: PORTS needs three ports" >&2; exit 2; }
  for i in 1 2 3; do
    d=$BASE/n$i
    mkdir -p "$d/db" "$d/logs"
    cp /etc/ejabberd/inetrc "$d/inetrc"
    cat >"$d/ejabberdctl.cfg" <<CFG
ERLANG_NODE=ejabberd$i@127.0.0.1
INET_DIST_INTERFACE=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
ERL_OPTIONS="-setcookie $COOKIE"
EJABBERD_BYPASS_WARNINGS=true
EJABBERD_PID_PATH=$d/ejabberd.pid
CFG
    cat >"$d/ejabberd.yml" <<YML
hosts: [localhost]
loglevel: warning
log_rotate_count: 0
auth_method: [anonymous]
anonymous_protocol: login_anon
listen:
  - port: ${ports[$((i - 1))]}
    ip: "127.0.0.1"
    module: mod_mqtt
    backlog: 1000
modules:
  mod_mqtt:
    session_expiry: 300
    max_queue: 100000
YML
  done
  "${sudo[@]}" chown -R ejabberd:ejabberd "$BASE"
  for i in 1 2 3; do ctl "$i" start; done
  for p in "${ports[@]}"; do wait_port "$p"; done
  ctl 2 join_cluster ejabberd1@127.0.0.1
  ctl 3 join_cluster ejabberd1@127.0.0.1
  for p in "${ports[@]}"; do wait_port "$p"; done
  [ "$(ctl 1 list_cluster | wc -l)" = 3 ] || { echo "ejabberd-cluster: the cluster did not form" >&2; exit 1; }
  ;;
kill)
  i=${2:?which node}
  pid=$(pid_of "$i") || { echo "ejabberd-cluster: no pid for node $i" >&2; exit 1; }
  "${sudo[@]}" kill -9 "$pid"
  for _ in $(seq 100); do alive "$pid" || exit 0; sleep 0.05; done
  echo "ejabberd-cluster: node $i survived kill -9" >&2
  exit 1
  ;;
stop)
  pids=$(for i in 1 2 3; do pid_of "$i" || true; done)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    "${sudo[@]}" kill $pids 2>/dev/null || true
    for p in $pids; do for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done; done
  fi
  # epmd was started by the first node; stop it when no Erlang node is left.
  epmd -names 2>/dev/null | grep -q '^name ' || "${sudo[@]}" epmd -kill >/dev/null 2>&1 || true
  ;;
*)
  echo "usage: BASE=DIR [PORTS='P1 P2 P3'] $0 start|kill I|stop" >&2
  exit 2
  ;;
esac
