#!/usr/bin/env bash
# The scale-out on this machine (issue #13), side by side in one run:
#  1. ovms3.bin (2.1 MB) and ovms3.ver throughput through nginx to ONE `ovota server` process and to TWO, both
#     on PostgreSQL + SeaweedFS (S3), wrk with 64 connections; rounds alternate the order. On 2 cores, nginx,
#     wrk and the servers share the CPUs, so this shows what a second process buys here, not on a real host.
#  2. Fleet check-ins written per second to PostgreSQL and to SQLite (bench/parts/checkins.py).
# SMOKE=1: one 1-second round per cell, to check that the bench still runs (CI does this).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${SMOKE:-}" ]; then DUR=1s ROUNDS=1; fi
DUR=${DUR:-5s}
ROUNDS=${ROUNDS:-3}
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx-light
need wrk wrk

export CLUSTER; CLUSTER=$(mktemp -d /tmp/ovota-bench-cluster.XXXXXX)
chmod 755 "$CLUSTER"
# The engines on the ports `make cluster` uses (run one or the other), the servers and nginx on their own.
export SERVER_PORTS="28081 28082" PORT=28080 HOST=127.0.0.1
# shellcheck source=../scripts/cluster.sh
source scripts/cluster.sh
cleanup() { cluster_stop; [ -f "$CLUSTER/one.pid" ] && kill "$(cat "$CLUSTER/one.pid")" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$CLUSTER"; }
trap cleanup EXIT
cluster_start
cluster_seed
cluster_servers --no-fleet --delta-bases 0
# A second nginx in front of the first server only, so both cells pay the same proxy.
ONE_PORT=28079
sed -e "s/listen $HOST:$PORT/listen $HOST:$ONE_PORT/" -e "s/server 127.0.0.1:28082; //" \
    -e "s#pid $CLUSTER/nginx.pid#pid $CLUSTER/one.pid#" "$CLUSTER/nginx.conf" >"$CLUSTER/one.conf"
"$(command -v nginx || echo /usr/sbin/nginx)" -c "$CLUSTER/one.conf" -p "$CLUSTER"
wait_port "$ONE_PORT" "nginx (one server)"
for port in "$ONE_PORT" "$PORT"; do  # warm the blob caches of both processes
  for _ in 1 2 3 4; do curl -s -o /dev/null "http://127.0.0.1:$port/firmware/ota/v3.3-5/main/ovms3.bin"; done
done

rate() {  # wrk's requests/s and transfer/s for one cell
  wrk -t2 -c64 -d"$DUR" "http://127.0.0.1:$1/firmware/ota/v3.3-5/main/$2" 2>/dev/null \
    | awk '/Requests\/sec/ {r=$2} /Transfer\/sec/ {t=$2} END {print r, t}'
}
declare -A req
for file in ovms3.bin ovms3.ver; do
  for name in one two; do req[$file-$name]=""; done
  for round in $(seq 1 "$ROUNDS"); do
    order="one two"; [ $((round % 2)) = 0 ] && order="two one"
    for name in $order; do
      port=$ONE_PORT; [ "$name" = two ] && port=$PORT
      read -r r t < <(rate "$port" "$file")
      req[$file-$name]+="$r "
      echo "round $round $file ${name} process(es): $r req/s, $t"
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
for file in ovms3.bin ovms3.ver; do
  one=$(echo "${req[$file-one]}" | median); two=$(echo "${req[$file-two]}" | median)
  echo "$file: one process $one req/s, two processes $two req/s, ratio two/one $(echo "scale=2; $two / $one" | bc)"
done
echo
if [ -n "${SMOKE:-}" ]; then .venv/bin/python bench/parts/checkins.py "$OVOTA_DB" --smoke; else .venv/bin/python bench/parts/checkins.py "$OVOTA_DB"; fi
