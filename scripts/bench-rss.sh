#!/usr/bin/env bash
# Memory of `replyflow serve` (issue 10, "Performance": idle RSS <= 30 MB, under the bench
# <= 150 MB), measured on the server process alone.
#
#   scripts/bench-rss.sh
#   RF_RSS_INSTANCES=5000 RF_RSS_IDLE_SECONDS=10 scripts/bench-rss.sh
#
# 1. idle: `replyflow serve` on its defaults, started in a fresh directory (SQLite replyflow.db,
#    file outbox, Maildir inbox there; only the port is chosen free and `admin` made an admin for
#    step 2). VmRSS once it listens and has sat idle RF_RSS_IDLE_SECONDS (5).
# 2. loaded: `replyflow bench --addr` against it (RF_RSS_INSTANCES (2000) instances, concurrency
#    32, approval mail on), then the server's VmHWM (its high-water mark) and VmRSS.
#
# `replyflow bench` without --addr prints the same for its own process (clients and in-process
# server together) on its "memory:" line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

IDLE_SECONDS="${RF_RSS_IDLE_SECONDS:-5}"
INSTANCES="${RF_RSS_INSTANCES:-2000}"

if [[ -z "${RF_RSS_NO_BUILD:-}" ]]; then
    cargo build --release --quiet
fi
BIN="$ROOT/target/release/replyflow"

DIR="$(mktemp -d "${TMPDIR:-/tmp}/rf-bench-rss-XXXXXX")"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" && wait "$PID" || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT

status() { awk -v key="$1:" '$1 == key { printf "%.1f MB", $2 / 1024 }' "/proc/$PID/status"; }

(cd "$DIR" && REPLYFLOW_SERVER_LISTEN="127.0.0.1:$PORT" REPLYFLOW_SECURITY_ADMINS=admin \
    exec "$BIN" serve >serve.log 2>&1) &
PID=$!
for _ in $(seq 1 600); do
    if grep -q "replyflow listening" "$DIR/serve.log" 2>/dev/null; then break; fi
    if ! kill -0 "$PID" 2>/dev/null; then cat "$DIR/serve.log" >&2; exit 1; fi
    sleep 0.1
done
sleep "$IDLE_SECONDS"
echo "replyflow serve (defaults), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "idle:   VmRSS $(status VmRSS)  (VmHWM $(status VmHWM)) after ${IDLE_SECONDS} s listening"

"$BIN" bench --addr "http://127.0.0.1:$PORT" --instances "$INSTANCES" --concurrency 32 \
    | grep -E '^(instances/s|CompleteTask \(both\))'
echo "loaded: VmHWM $(status VmHWM)  (VmRSS now $(status VmRSS)) after $INSTANCES instances from 32 clients"
