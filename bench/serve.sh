#!/usr/bin/env bash
# Serve the same firmware files from nginx and from `ovota server`, side by side, and load both with wrk.
# Method of ../shared/reference/http-serving-baseline.md: loopback only, server pinned to CPU0, wrk to CPU1,
# rounds alternate the server order. Goals (issue #4): ovms3.bin (2.1 MB, 8 and 64 connections) >= 0.95x
# nginx's throughput; ovms3.ver >= 0.25x nginx's requests/s on one core. Prints every cell and the ratios.
# The fleet registry's cost (issue #10): ovms3.ver requests with OVMS User-Agents (10,000 vehicle ids) against
# `ovota server` with registration on and with --no-fleet; goal: on >= 0.8x off.
# SMOKE=1: one 1-second round per cell, to check that the bench still runs (CI does this).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${SMOKE:-}" ]; then DUR=1s ROUNDS=1; fi
DUR=${DUR:-5s}
ROUNDS=${ROUNDS:-3}
OVOTA=${OVOTA:-.venv/bin/ovota}
NGINX_PORT=${NGINX_PORT:-18090}
OVOTA_PORT=${OVOTA_PORT:-18091}
NOFLEET_PORT=${NOFLEET_PORT:-18092}

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx-light
need wrk wrk
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
chmod 755 "$work"  # nginx workers run as an unprivileged user
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
pids=()
trap cleanup EXIT

# One build in an ovota repository, and the very same bytes at the same paths for nginx.
SOURCE_DATE_EPOCH=1784000000 "$OVOTA" image build --version 3.3.006 --size 2100352 "$work/ovms3.bin" >/dev/null
"$OVOTA" release publish "$work/ovms3.bin" --repo "$work/repo" --tag main >/dev/null
www="$work/www/firmware/ota/v3.3-5/main"
mkdir -p "$www"
cp "$work/ovms3.bin" "$www/ovms3.bin"
printf '3.3.006\n' > "$www/ovms3.ver"

cat > "$work/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$NGINX_PORT; root $work/www; } }
CONF
taskset -c 0 "$NGINX" -c "$work/nginx.conf" -p "$work" & pids+=($!)
nginx_pid=$!
taskset -c 0 "$OVOTA" server --repo "$work/repo" --port "$OVOTA_PORT" >/dev/null 2>&1 & pids+=($!)
ovota_pid=$!
taskset -c 0 "$OVOTA" server --repo "$work/repo" --port "$NOFLEET_PORT" --no-fleet >/dev/null 2>&1 & pids+=($!)
nofleet_pid=$!
cat > "$work/ovms.lua" <<'LUA'
-- OVMS modules' .ver requests: the exact User-Agent shape, 10,000 different vehicle ids.
counter = 0
request = function()
  counter = counter + 1
  local agent = "ovms/v3.3-5 (W" .. (counter % 10000) .. " 3.3.006/ota_0/main (build idf v3.3.4-854-g9063c8662c May 13 2026 20:13:48, product v3.3-5))"
  return wrk.format("GET", "/firmware/ota/v3.3-5/main/ovms3.ver", {["User-Agent"] = agent})
end
LUA
for port in "$NGINX_PORT" "$OVOTA_PORT" "$NOFLEET_PORT"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/firmware/ota/v3.3-5/main/ovms3.ver" >/dev/null && break; sleep 0.1; done
done
cmp <(curl -s "http://127.0.0.1:$NGINX_PORT/firmware/ota/v3.3-5/main/ovms3.bin") \
    <(curl -s "http://127.0.0.1:$OVOTA_PORT/firmware/ota/v3.3-5/main/ovms3.bin")

# CPU time (clock ticks) of a process and its children: the server-side cost, less noisy than req/s.
ticks() { local total=0 p; for p in "$1" $(pgrep -P "$1"); do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$total"; }

# wrk against server pid $1 on port $2 with $3 connections for file $4 (ovms: .ver with OVMS User-Agents):
# prints "rps p99_ms cpu_us_per_request"
load() {
  local before after script=() file=$4
  if [ "$4" = ovms ]; then script=(-s "$work/ovms.lua"); file=ovms3.ver; fi
  before=$(ticks "$1")
  taskset -c 1 wrk -t1 -c"$3" -d"$DUR" --latency "${script[@]}" "http://127.0.0.1:$2/firmware/ota/v3.3-5/main/$file" > "$work/wrk.out"
  after=$(ticks "$1")
  awk -v cpu=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    /requests in/ {n=$1} /Requests\/sec/ {rps=$2}
    /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p99=v}
    END {printf "%s %s %.1f\n", rps, p99, cpu / hz * 1e6 / n}' "$work/wrk.out"
}

declare -A results
cells=("ovms3.bin 8" "ovms3.bin 64" "ovms3.ver 64")
for round in $(seq "$ROUNDS"); do
  order=(nginx ovota); [ $((round % 2)) -eq 0 ] && order=(ovota nginx)
  for cell in "${cells[@]}"; do
    set -- $cell
    for server in "${order[@]}"; do
      port=$NGINX_PORT pid=$nginx_pid; [ "$server" = ovota ] && port=$OVOTA_PORT pid=$ovota_pid
      results["$server $1 $2"]+="$(load "$pid" "$port" "$2" "$1");"
    done
  done
  order=(ovota nofleet); [ $((round % 2)) -eq 0 ] && order=(nofleet ovota)
  for server in "${order[@]}"; do
    port=$OVOTA_PORT pid=$ovota_pid; [ "$server" = nofleet ] && port=$NOFLEET_PORT pid=$nofleet_pid
    results["$server ovms 64"]+="$(load "$pid" "$port" 64 ovms);"
  done
done

median() { tr ';' '\n' | awk 'NF' | sort -n -k"$1" | awk -v k="$1" '{a[NR]=$k} END {print a[int((NR+1)/2)]}'; }
printf '%-8s %-10s %5s %12s %10s %9s %12s\n' server file conns "req/s" "MB/s" "p99 ms" "CPU us/req"
for cell in "${cells[@]}"; do
  set -- $cell
  size=$([ "$1" = ovms3.bin ] && echo 2100352 || echo 8)
  for server in nginx ovota; do
    rps=$(echo "${results[$server $1 $2]}" | median 1)
    p99=$(echo "${results[$server $1 $2]}" | median 2)
    cpu=$(echo "${results[$server $1 $2]}" | median 3)
    printf '%-8s %-10s %5s %12.1f %10.1f %9s %12s\n' "$server" "$1" "$2" "$rps" "$(echo "$rps * $size / 1000000" | bc -l)" "$p99" "$cpu"
  done
  n=$(echo "${results[nginx $1 $2]}" | median 1); o=$(echo "${results[ovota $1 $2]}" | median 1)
  nc=$(echo "${results[nginx $1 $2]}" | median 3); oc=$(echo "${results[ovota $1 $2]}" | median 3)
  goal=$([ "$1" = ovms3.bin ] && echo 0.95 || echo 0.25)
  printf '  ratio ovota/nginx %s c%s: throughput %.2f (goal >= %s), CPU per request %.2f\n' \
    "$1" "$2" "$(echo "$o / $n" | bc -l)" "$goal" "$(echo "$nc / $oc" | bc -l)"
done
printf '%-8s %-22s %5s %12s %9s %12s\n' server "ovms3.ver, OVMS agents" conns "req/s" "p99 ms" "CPU us/req"
for server in ovota nofleet; do
  printf '%-8s %-22s %5s %12.1f %9s %12s\n' "$server" "registration $([ $server = ovota ] && echo on || echo off)" 64 \
    "$(echo "${results[$server ovms 64]}" | median 1)" "$(echo "${results[$server ovms 64]}" | median 2)" \
    "$(echo "${results[$server ovms 64]}" | median 3)"
done
on=$(echo "${results[ovota ovms 64]}" | median 1); off=$(echo "${results[nofleet ovms 64]}" | median 1)
printf '  ratio registration on/off ovms3.ver c64: throughput %.2f (goal >= 0.80)\n' "$(echo "$on / $off" | bc -l)"
