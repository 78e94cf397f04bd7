#!/usr/bin/env bash
# `make cluster` started and stopped many times in a row on one folder, as an operator would (issue #26): every
# start must come up and serve main, eap and edge through nginx. Per start: seconds until the script says it is
# up (every part answered a real request) and whether the three channels answered. Reference, measured within the
# same starts: the time the engines alone took to be ready (PostgreSQL, and SeaweedFS storing and returning an
# object: after the first start it loads its volumes for a while), so the ratio says how much of a start is
# ovota's own (seeding, two servers, nginx).
# STARTS=N (default 10); SMOKE=1: one start, to check that the bench still runs (CI does this).
set -euo pipefail
cd "$(dirname "$0")/.."
STARTS=${STARTS:-10}
[ -n "${SMOKE:-}" ] && STARTS=1
WORK=$(mktemp -d /tmp/ovota-bench-starts.XXXXXX)
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT
export CLUSTER="$WORK/cluster" PORT=${PORT:-28090} SERVER_PORTS="28091 28092" HOST=127.0.0.1 PG_PORT=${PG_PORT:-25432}

failed=0 ups="" engines=""
for n in $(seq 1 "$STARTS"); do
  log="$WORK/start-$n.log"
  setsid bash scripts/cluster.sh >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 360); do
    grep -q "Ctrl-C stops" "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  served=0
  if grep -q "Ctrl-C stops" "$log"; then
    for tag in main eap edge; do
      curl -fsS -o /dev/null "http://127.0.0.1:$PORT/firmware/ota/v3.3-5/$tag/ovms3.ver" && served=$((served + 1))
    done
  fi
  # SIGTERM, not Ctrl-C's SIGINT: a job started with & from a script ignores SIGINT (no job control here).
  kill -TERM -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  up=$(sed -n 's/.*up in \([0-9.]*\) s$/\1/p' "$log")
  engine=$(sed -n 's/^PostgreSQL and SeaweedFS ready in \([0-9.]*\) s$/\1/p' "$log")
  if [ -n "$up" ] && [ "$served" = 3 ]; then
    printf 'start %2d: up in %5.1f s (engines %5.1f s), 3 of 3 channels served\n' "$n" "$up" "$engine"
    ups="$ups $up" engines="$engines $engine"
  else
    failed=$((failed + 1))
    printf 'start %2d: FAILED (%s of 3 channels served)\n' "$n" "$served"; tail -5 "$log"
  fi
done

mean() { echo "$@" | awk '{ for (i = 1; i <= NF; i++) s += $i; printf "%.1f", NF ? s / NF : 0 }'; }
echo "make cluster: $((STARTS - failed)) of $STARTS starts came up and served main, eap and edge; mean $(mean $ups) s"
echo "engines alone within them (PostgreSQL + SeaweedFS ready for an S3 round trip): mean $(mean $engines) s"
echo "ratio whole start / engines alone: $(echo "$(mean $ups) $(mean $engines)" | awk '{ printf "%.2f", $2 ? $1 / $2 : 0 }')"
[ "$failed" = 0 ]
