#!/usr/bin/env bash
# replyflow against its peer, SpiffWorkflow (issue 10, "Performance"): the same three-step
# approval, run alternately in the same session so both see the same machine load.
#
#   scripts/bench-peer.sh                          # 3 rounds, synchronous FULL then NORMAL
#   RF_PEER_ROUNDS=5 RF_PEER_SYNC=FULL scripts/bench-peer.sh
#   RF_BENCH_ARGS="--without-email" scripts/bench-peer.sh
#
# Per round and synchronous mode: `replyflow bench --instances RF_PEER_INSTANCES (2000)
# --concurrency 32 --synchronous full|normal` (release build, approval mail on unless
# RF_BENCH_ARGS says otherwise), then the peer `bench_spiff.py --mode roundtrip -n RF_PEER_N (1000)
# --sync FULL|NORMAL` (load from SQLite, complete, save: one transaction per step). Prints each
# run's instances/s, then per mode the medians and their ratio (goal: >= 5x).
#
# The peer lives outside the repository (../shared/peers/, or RF_PEER_SCRIPT); it is run from
# there, never copied. Its venv is target/spiff (created with `pip install spiffworkflow` on first
# use). The load average (1/5/15 min) before each run is printed with it: the machine may be
# shared. RF_PEER_VERBOSE=1 prints replyflow's whole report of each run; RF_PEER_NO_BUILD=1 uses
# target/release/replyflow as it is.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROUNDS="${RF_PEER_ROUNDS:-3}"
SYNCS="${RF_PEER_SYNC:-FULL NORMAL}"
INSTANCES="${RF_PEER_INSTANCES:-2000}"
PEER_N="${RF_PEER_N:-1000}"
read -r -a EXTRA <<<"${RF_BENCH_ARGS:-}"

PEER="${RF_PEER_SCRIPT:-}"
if [[ -z "$PEER" ]]; then
    for candidate in ../shared/peers/bench_spiff.py ../../shared/peers/bench_spiff.py; do
        if [[ -f "$candidate" ]]; then
            PEER="$(cd "$(dirname "$candidate")" && pwd)/bench_spiff.py"
            break
        fi
    done
fi
if [[ -z "$PEER" || ! -f "$PEER" ]]; then
    echo "bench-peer: bench_spiff.py not found (../shared/peers/); set RF_PEER_SCRIPT" >&2
    exit 2
fi

VENV="$ROOT/target/spiff"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import SpiffWorkflow' 2>/dev/null; then
    echo "bench-peer: creating $VENV (pip install spiffworkflow)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet spiffworkflow
fi

if [[ -z "${RF_PEER_NO_BUILD:-}" ]]; then
    cargo build --release --quiet
fi
BIN="$ROOT/target/release/replyflow"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/rf-bench-peer-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }

# One number per line in $1; prints the median (the mean of the middle two for an even count).
median() {
    sort -g "$1" | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "bench-peer: $ROUNDS round(s); replyflow $INSTANCES instances, concurrency 32 ${EXTRA[*]:-}; SpiffWorkflow roundtrip -n $PEER_N"
echo "            $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $("$VENV/bin/python" -c 'import importlib.metadata as m; print("SpiffWorkflow", m.version("SpiffWorkflow"))')"
for round in $(seq 1 "$ROUNDS"); do
    for sync in $SYNCS; do
        lower="$(tr '[:upper:]' '[:lower:]' <<<"$sync")"
        out="$WORK/replyflow-$sync-$round.txt"
        before="$(load)"
        "$BIN" bench --instances "$INSTANCES" --concurrency 32 --synchronous "$lower" \
            "${EXTRA[@]}" >"$out"
        rf="$(awk '/^instances\/s:/ { print $2 }' "$out")"
        p99="$(awk '/^CompleteTask \(both\)/ { print $7 }' "$out")"
        echo "$rf" >>"$WORK/rf-$sync"
        if [[ -n "${RF_PEER_VERBOSE:-}" ]]; then cat "$out"; fi
        printf 'round %d %-6s replyflow      %8.1f instances/s  (CompleteTask p99 %s ms; load %s)\n' \
            "$round" "$sync" "$rf" "$p99" "$before"

        before="$(load)"
        json="$("$VENV/bin/python" "$PEER" --mode roundtrip -n "$PEER_N" --sync "$sync" \
            --db "$WORK/spiff.db")"
        spiff="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["instances_per_s"])' "$json")"
        echo "$spiff" >>"$WORK/spiff-$sync"
        printf 'round %d %-6s SpiffWorkflow  %8.1f instances/s  (load %s)\n' \
            "$round" "$sync" "$spiff" "$before"
    done
done

echo
for sync in $SYNCS; do
    rf="$(median "$WORK/rf-$sync")"
    spiff="$(median "$WORK/spiff-$sync")"
    ratio="$(awk -v a="$rf" -v b="$spiff" 'BEGIN { printf "%.2f", a / b }')"
    printf 'synchronous=%-6s median replyflow %8.1f  SpiffWorkflow %8.1f  ratio %sx\n' \
        "$sync" "$rf" "$spiff" "$ratio"
done
