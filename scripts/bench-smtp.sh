#!/usr/bin/env bash
# Outbound mail throughput (issue 3, "Performance"; measured and reported, not a timed test).
#
#   scripts/bench-smtp.sh            # N=2000 mails of 2 KB, concurrency 10, 3 rounds
#   RF_BENCH_MAILS=5000 RF_BENCH_CONCURRENCY=16 RF_BENCH_ROUNDS=5 scripts/bench-smtp.sh
#
# 1. The Rust driver (tests/mail/bench.rs, an #[ignore]d test, release build) starts Postfix's
#    smtp-sink on a free loopback port and, into that one sink, measures: the outbox worker end to
#    end (claim, send over the connection pool, mark sent; SQLite synchronous=FULL and NORMAL),
#    the SMTP transport alone, and smtp-source sending the same number of mails of the same size
#    with connections reused (-d) and with a connection per mail. It prints mails/s and the ratios.
# 2. As a cross-check outside Rust, the same smtp-source commands, timed by this script, into a
#    sink of its own:
#      smtp-sink -c -u root 127.0.0.1:PORT 100
#      smtp-source -s 10 -m N -l 2048 -d 127.0.0.1:PORT     (connections reused)
#      smtp-source -s 10 -m N -l 2048 127.0.0.1:PORT        (a new connection per mail)
#
# Needs Postfix's binaries only (./scripts/test installs postfix), not the test mail stack.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SINK=/usr/sbin/smtp-sink
SOURCE=/usr/sbin/smtp-source
if [[ ! -x "$SINK" || ! -x "$SOURCE" ]]; then
    echo "bench-smtp: $SINK and $SOURCE are needed: apt-get install postfix (./scripts/test installs it)" >&2
    exit 1
fi
N="${RF_BENCH_MAILS:-2000}"
export RF_BENCH_MAILS="$N"

echo "== 1. replyflow vs smtp-source (Rust driver, release build)"
cargo test --release --test mail -- --ignored --nocapture bench

echo
echo "== 2. smtp-source alone, timed by this script"
port_open() { timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }
port=20025
while port_open "$port"; do port=$((port + 1)); done
sink_user=()
[[ "$EUID" -eq 0 ]] && sink_user=(-u root)
"$SINK" -c "${sink_user[@]}" "127.0.0.1:$port" 100 </dev/null >/dev/null 2>&1 &
sink_pid=$!
trap 'kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    port_open "$port" && break
    sleep 0.05
done

run() {
    local label="$1" start end
    shift
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    awk -v n="$N" -v s="$start" -v e="$end" -v l="$label" \
        'BEGIN { printf "%-58s %7.3f s %9.0f mails/s\n", l, e - s, n / (e - s) }'
}
run "smtp-source -s 10 -m $N -l 2048 -d (connections reused)" \
    "$SOURCE" -s 10 -m "$N" -l 2048 -d "127.0.0.1:$port"
run "smtp-source -s 10 -m $N -l 2048 (a connection per mail)" \
    "$SOURCE" -s 10 -m "$N" -l 2048 "127.0.0.1:$port"
