#!/usr/bin/env bash
# `make cluster`: ovota on real distributed engines, on one machine. PostgreSQL (initdb in build/cluster, run
# by the postgres user when started as root: initdb refuses root), SeaweedFS (`weed server -s3`), two
# `ovota server` processes with blob caches of their own, and nginx in front of both on one port; seeded with
# one build per channel like `make run`. Ctrl-C stops everything.
#
#   PORT=8080 HOST=127.0.0.1 make cluster
#
# With `source scripts/cluster.sh` and `cluster_start`, bench/cluster.sh starts the same cluster for itself.
set -euo pipefail

OVOTA=${OVOTA:-$PWD/.venv/bin/ovota}
PY=${PY:-$PWD/.venv/bin/python}
WEED=${WEED:-$PWD/.venv/bin/weed}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8080}
CLUSTER=${CLUSTER:-$PWD/build/cluster}
PG_PORT=${PG_PORT:-15432}
S3_PORT=${S3_PORT:-18333}
WEED_MASTER=${WEED_MASTER:-19333}
WEED_VOLUME=${WEED_VOLUME:-18380}
WEED_FILER=${WEED_FILER:-18888}
SERVER_PORTS=${SERVER_PORTS:-"18081 18082"}
BUCKET=${BUCKET:-ovota}

cluster_pids=()

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cluster_stop() {
  [ -f "$CLUSTER/nginx.pid" ] && kill "$(cat "$CLUSTER/nginx.pid")" 2>/dev/null || true
  for pid in "${cluster_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${cluster_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done  # weed may ignore SIGTERM
  [ -n "${PGDATA_DIR:-}" ] && as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
  wait 2>/dev/null || true
}

wait_port() {
  for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1 ($2)" >&2; return 1
}

# Ready means a real request succeeds (a port can listen long before): GET URL until it answers 200 (60 s at most).
wait_ready() {
  local url=$1 what=$2 answer=""
  for _ in $(seq 1 240); do
    answer=$("$PY" - "$url" <<'PY' 2>&1
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
        print(response.status)
except Exception as err:  # refused, 503, a timeout: not ready yet
    print(err)
PY
)
    [ "$answer" = 200 ] && return 0
    sleep 0.25
  done
  echo "$what is not ready ($url: $answer)" >&2; return 1
}

# A command that may meet a backend still warming up (SeaweedFS answering InternalError): tried 6 times.
retry() {
  local pause=1
  for attempt in 1 2 3 4 5 6; do
    "$@" && return 0
    [ "$attempt" = 6 ] && break
    echo "retrying in ${pause}s: $*" >&2; sleep "$pause"; pause=$((pause * 2))
  done
  return 1
}

cluster_start() {
  mkdir -p "$CLUSTER"
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  [ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; return 1; }
  # The postgres user must reach the data directory; where it cannot (a checkout under /root), the data
  # lives in /tmp and build/cluster/pgdata points at it.
  PGDATA_DIR="$CLUSTER/pgdata"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$CLUSTER"; then
    [ -L "$PGDATA_DIR" ] || ln -sfn "$(mktemp -d /tmp/ovota-cluster-pg.XXXXXX)" "$PGDATA_DIR"
    PGDATA_DIR=$(readlink -f "$PGDATA_DIR")
  fi
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    mkdir -p "$PGDATA_DIR"; chmod 700 "$PGDATA_DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$PGDATA_DIR" "$(dirname "$PGDATA_DIR")" 2>/dev/null || true
    as_postgres "$PG_BIN/initdb" -D "$PGDATA_DIR" -A trust -U ovota -E UTF8 >/dev/null
  fi
  as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/log" -w start \
    -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200" >/dev/null
  retry "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U ovota -d postgres -qtAc "SELECT 1" >/dev/null
  "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U ovota -d postgres -qtAc "SELECT 1 FROM pg_database WHERE datname = 'ovota'" \
    | grep -q 1 || "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U ovota -d postgres -qc "CREATE DATABASE ovota"
  export OVOTA_DB="postgresql://ovota@127.0.0.1:$PG_PORT/ovota"

  mkdir -p "$CLUSTER/weed"
  # SeaweedFS also listens on unix sockets named after its ports; one left by a killed run would be dialled.
  for port in "$WEED_MASTER" "$WEED_VOLUME" "$WEED_FILER" "$S3_PORT"; do
    rm -f /tmp/seaweedfs-*-"$port".sock /tmp/seaweedfs-*-"$((port + 10000))".sock
  done
  "$WEED" server -dir="$CLUSTER/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$WEED_MASTER" \
    -volume.port="$WEED_VOLUME" -filer.port="$WEED_FILER" -s3 -s3.port="$S3_PORT" -s3.port.iceberg=0 \
    -s3.port.lance=0 -master.volumeSizeLimitMB=64 -volume.max=100 >"$CLUSTER/weed.log" 2>&1 &
  cluster_pids+=($!)
  wait_port "$S3_PORT" "SeaweedFS S3"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-ovota}
  export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-ovota} AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
  # The bucket is made once and found on every later start; any other answer is shown, not swallowed. Then a probe
  # object is written, read back and deleted: SeaweedFS answers InternalError for a while after its gateway
  # listens (its volumes are still loading), so the store is ready only when a real round trip succeeds.
  "$PY" - "$BUCKET" <<'PY'
import sys, time
import boto3
from botocore.exceptions import BotoCoreError, ClientError

bucket, s3, last = sys.argv[1], boto3.client("s3"), None
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
                raise
            try:
                s3.create_bucket(Bucket=bucket)
            except ClientError as made:
                if made.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        s3.put_object(Bucket=bucket, Key="ready-probe", Body=b"ovota")
        if s3.get_object(Bucket=bucket, Key="ready-probe")["Body"].read() == b"ovota":
            s3.delete_object(Bucket=bucket, Key="ready-probe")
            break
    except (BotoCoreError, ClientError) as err:  # not listening yet, or still loading its volumes
        last = err
    time.sleep(0.5)
else:
    sys.exit(f"SeaweedFS's S3 gateway did not store and return an object in bucket {bucket}: {last}")
PY
  export OVOTA_BLOBS="s3://$BUCKET/firmware"
}

cluster_seed() {
  for seed in main:3.3.006 eap:3.3.006-52-g1b2c3d4 edge:3.3.006-172-g362f87425; do
    tag=${seed%%:*}; version=${seed#*:}
    SOURCE_DATE_EPOCH=1784000000 "$OVOTA" image build --version "$version" --size 2100352 "$CLUSTER/$tag.bin" >/dev/null
    # Only empty channels, of both products (v3.3: the older layouts), as `make run`: an operator's build is kept,
    # and a retry (or a second start) is harmless.
    for product in v3.3-5 v3.3; do
      retry "$OVOTA" release publish "$CLUSTER/$tag.bin" --tag "$tag" --product "$product" --if-empty >/dev/null
    done
  done
}

cluster_servers() {
  local upstreams="" n=0
  for port in $SERVER_PORTS; do
    n=$((n + 1))
    OVOTA_CACHE="$CLUSTER/cache$n" "$OVOTA" server --host 127.0.0.1 --port "$port" --forwarded-by 127.0.0.1 "$@" >"$CLUSTER/server$n.log" 2>&1 &
    cluster_pids+=($!)
    upstreams+="server 127.0.0.1:$port; "
  done
  for port in $SERVER_PORTS; do wait_ready "http://127.0.0.1:$port/readyz" "ovota server on port $port"; done
  local nginx; nginx=$(command -v nginx || echo /usr/sbin/nginx)
  mkdir -p "$CLUSTER/nginx"; chmod 755 "$CLUSTER/nginx"
  cat >"$CLUSTER/nginx.conf" <<CONF
daemon on; worker_processes 1; pid $CLUSTER/nginx.pid; error_log $CLUSTER/nginx.err;
events { worker_connections 4096; }
http { access_log off; client_max_body_size 64m;
  client_body_temp_path $CLUSTER/nginx; proxy_temp_path $CLUSTER/nginx; fastcgi_temp_path $CLUSTER/nginx;
  uwsgi_temp_path $CLUSTER/nginx; scgi_temp_path $CLUSTER/nginx;
  upstream ovota { $upstreams keepalive 64; }
  server { listen $HOST:$PORT;
    location / { proxy_pass http://ovota; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_next_upstream error timeout http_503; } } }
CONF
  "$nginx" -c "$CLUSTER/nginx.conf" -p "$CLUSTER"
  local front=$HOST; [ "$front" = 0.0.0.0 ] && front=127.0.0.1
  wait_ready "http://$front:$PORT/readyz" "nginx on port $PORT"
  for tag in main eap edge; do
    wait_ready "http://$front:$PORT/firmware/ota/v3.3-5/$tag/ovms3.ver" "channel $tag through nginx"
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  trap cluster_stop EXIT
  trap 'exit 0' INT TERM
  began=$(date +%s.%N)
  cluster_start
  echo "PostgreSQL and SeaweedFS ready in $(echo "$(date +%s.%N) - $began" | bc) s"
  cluster_seed
  cluster_servers
  echo "ovota cluster on http://$HOST:$PORT/firmware/ota/ (nginx -> ovota servers on ports $SERVER_PORTS)," \
    "up in $(echo "$(date +%s.%N) - $began" | bc) s"
  echo "For the CLI, in another shell:"
  echo "  export OVOTA_DB=$OVOTA_DB OVOTA_BLOBS=$OVOTA_BLOBS"
  echo "  export AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
  echo "  export AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION"
  echo "Ctrl-C stops PostgreSQL, SeaweedFS, the servers and nginx."
  wait "${cluster_pids[0]}"
fi
