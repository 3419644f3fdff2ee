#!/usr/bin/env bash
# Inbound mail measurements (issue 4, "Performance"; measured and reported, not timed tests).
#
#   scripts/bench-inbound.sh                 # all three, release build, SQLite
#   RF_BENCH_BACKLOG=5000 RF_BENCH_SUBMIT=500 RF_BENCH_CONCURRENCY=8 scripts/bench-inbound.sh
#   RF_BENCH_ARGS="--database postgres://postgres@127.0.0.1:5432/postgres --fresh-postgres" \
#       scripts/bench-inbound.sh             # the same on PostgreSQL
#   RF_BENCH_ONLY=backlog|submit|idle scripts/bench-inbound.sh
#
# 1. backlog: `replyflow bench --inbound-backlog N`: N replies (each a real reply to a real
#    approval mail) are APPENDed to a fresh folder of approvals@ on the test Dovecot, then the
#    IMAP reader makes one pass over them (connect, SELECT, FETCH sizes + bodies 100 per command,
#    ingest each, UID MOVE 100 per command). Prints replies applied per second (goal >= 1,000/s)
#    and what IMAP alone costs for the same mail, so the rest is ingestion.
# 2. submit: `replyflow bench --submit-replies N`: SubmitInboundEmail latency p50/p90/p99 over N
#    replies one at a time, then N more from RF_BENCH_CONCURRENCY clients (goal p99 <= 50 ms).
# 3. idle: the #[ignore]d test inbound_latency_over_imap_idle: Postfix "250 queued" -> task
#    completed over IMAP IDLE, 20 replies (Dovecot notifies IDLE ~0.5 s after delivery).
#
# Needs the test mail stack: without RF_MAIL_* in the environment the script runs itself again
# under ./scripts/test (which starts Postfix + Dovecot on loopback and stops them at the end).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -z "${RF_MAIL_IMAPS_PORT:-}" ]]; then
    exec ./scripts/test -- "$0" "$@"
fi

BACKLOG="${RF_BENCH_BACKLOG:-5000}"
SUBMIT="${RF_BENCH_SUBMIT:-500}"
CONCURRENCY="${RF_BENCH_CONCURRENCY:-8}"
ONLY="${RF_BENCH_ONLY:-}"
read -r -a EXTRA <<<"${RF_BENCH_ARGS:-}"

cargo build --release --quiet
BIN="$ROOT/target/release/replyflow"
IMAP_URL="imaps://approvals%40${RF_MAIL_DOMAIN}:${RF_MAIL_PASSWORD}@localhost:${RF_MAIL_IMAPS_PORT}"

if [[ -z "$ONLY" || "$ONLY" == backlog ]]; then
    echo "== 1. backlog of $BACKLOG replies in an IMAP folder when the reader starts"
    "$BIN" bench --inbound-backlog "$BACKLOG" --imap "$IMAP_URL" --ca-file "$RF_MAIL_CA_FILE" \
        --concurrency "$CONCURRENCY" "${EXTRA[@]}"
    echo
fi
if [[ -z "$ONLY" || "$ONLY" == submit ]]; then
    echo "== 2. SubmitInboundEmail latency, $SUBMIT sequential + $SUBMIT from $CONCURRENCY clients"
    "$BIN" bench --submit-replies "$SUBMIT" --concurrency "$CONCURRENCY" "${EXTRA[@]}"
    echo
fi
if [[ -z "$ONLY" || "$ONLY" == idle ]]; then
    echo "== 3. delivery -> decision over IMAP IDLE (20 replies)"
    cargo test --release --quiet --test mail -- --ignored --nocapture inbound_latency 2>&1 |
        grep -E 'inbound latency|test result'
fi
