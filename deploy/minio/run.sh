#!/usr/bin/env bash
# Run a throwaway MinIO for batchpipe on this machine, no Docker needed.
#
#   deploy/minio/run.sh                 build bin/minio if missing, then run it
#   deploy/minio/run.sh --build-only    only build bin/minio
#   deploy/minio/run.sh --port 9000 --bucket batchpipe
#
# MinIO is built from the Go module proxy at a pinned version (about ten
# minutes the first time). The server listens on 127.0.0.1, keeps its data in
# a temporary directory, and runs in the foreground until Ctrl-C, which stops
# it and deletes the data. Credentials: MINIO_ROOT_USER/MINIO_ROOT_PASSWORD if
# set, else minioadmin/minioadmin.
set -euo pipefail

MINIO_VERSION=${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$root/bin/minio

build_only=false
port=${MINIO_PORT:-}
bucket=batchpipe

usage() {
	sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
	cat <<EOF

Options:
  --build-only     build bin/minio (if missing) and exit
  --port N         API port (default: first free port from 9000)
  --bucket NAME    bucket to create at start (default: batchpipe; "" for none)
  -h, --help       this help
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--build-only) build_only=true ;;
	--port) port=${2:?--port needs a number}; shift ;;
	--port=*) port=${1#*=} ;;
	--bucket) bucket=${2?--bucket needs a name}; shift ;;
	--bucket=*) bucket=${1#*=} ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

build() {
	mkdir -p "$root/bin"
	# One build at a time: a second caller waits for the first.
	if command -v flock >/dev/null; then
		exec 9>"$root/bin/.minio-build.lock"
		flock 9
	fi
	if [ -x "$bin" ]; then
		return
	fi
	command -v go >/dev/null || { echo "run.sh: Go is needed to build MinIO" >&2; exit 1; }
	echo "Building MinIO $MINIO_VERSION into $root/bin (about ten minutes the first time)..." >&2
	GOBIN="$root/bin" go install "github.com/minio/minio@$MINIO_VERSION"
	echo "Built $bin" >&2
}

[ -x "$bin" ] || build
if $build_only; then
	exit 0
fi

# in_use PORT: something already listens on 127.0.0.1:PORT.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
	local p=$1
	while in_use "$p"; do p=$((p + 1)); done
	echo "$p"
}

if [ -z "$port" ]; then
	port=$(free_port 9000)
elif in_use "$port"; then
	echo "run.sh: port $port is already in use" >&2
	exit 1
fi
console_port=$(free_port $((port + 1)))

export MINIO_ROOT_USER=${MINIO_ROOT_USER:-minioadmin}
export MINIO_ROOT_PASSWORD=${MINIO_ROOT_PASSWORD:-minioadmin}
export MINIO_UPDATE=off

data=$(mktemp -d "${TMPDIR:-/tmp}/batchpipe-minio.XXXXXX")
log=$data.log
pid=

cleanup() {
	trap - EXIT INT TERM
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$data" "$log"
}
trap cleanup EXIT
trap 'echo; echo "Stopping MinIO and deleting its data..." >&2; exit 0' INT TERM

"$bin" server --quiet \
	--address "127.0.0.1:$port" \
	--console-address "127.0.0.1:$console_port" \
	"$data" >"$log" 2>&1 &
pid=$!

endpoint=http://127.0.0.1:$port
live() {
	if command -v curl >/dev/null; then
		curl -fsS -o /dev/null "$endpoint/minio/health/live" 2>/dev/null
	else
		# Plain HTTP over bash's /dev/tcp when curl is missing.
		(
			exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
			printf 'GET /minio/health/live HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
			read -r _ status _ <&3 || exit 1
			[ "$status" = 200 ]
		) 2>/dev/null
	fi
}
for _ in $(seq 1 600); do
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "run.sh: MinIO exited during start-up:" >&2
		cat "$log" >&2
		exit 1
	fi
	live && break
	sleep 0.1
done
if ! live; then
	echo "run.sh: MinIO did not answer on $endpoint within 60s:" >&2
	cat "$log" >&2
	exit 1
fi

made=""
if [ -n "$bucket" ]; then
	# curl >= 7.75 signs S3 requests itself.
	if command -v curl >/dev/null &&
		curl -fsS -o /dev/null -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" \
			--user "$MINIO_ROOT_USER:$MINIO_ROOT_PASSWORD" "$endpoint/$bucket" 2>/dev/null; then
		made=$bucket
	else
		echo "run.sh: could not create bucket $bucket (curl >= 7.75 needed); create it with any S3 client" >&2
	fi
fi
b=${made:-<bucket>}

cat <<EOF
MinIO is running (Ctrl-C stops it and deletes its data: $data)
  endpoint    $endpoint
  console     http://127.0.0.1:$console_port
  access key  $MINIO_ROOT_USER
  secret key  $MINIO_ROOT_PASSWORD
  bucket      ${made:-(none created)}

Use it from batchpipe (in another shell):
  export MINIO_ROOT_USER=$MINIO_ROOT_USER MINIO_ROOT_PASSWORD=$MINIO_ROOT_PASSWORD
  store URL:  minio://127.0.0.1:$port/$b?secure=false
  or, with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY set to the same keys:
              s3://$b?endpoint=$endpoint&path_style=true&region=us-east-1
  tests:      BATCHPIPE_MINIO_ENDPOINT=127.0.0.1:$port go test ./...
EOF

wait "$pid"
