#!/usr/bin/env bash
# Scores the reply reader on the third-party corpus (../shared/corpus, cases with exact
# expectations): prints "corpus score: N/M = P%" and one "FAIL source/id" line per miss.
#   scripts/corpus-score.sh            # score + failing ids
#   VERBOSE=1 scripts/corpus-score.sh  # also prints got/expected for each miss
# REPLY_CORPUS=/path/to/corpus overrides the location.
set -euo pipefail
cd "$(dirname "$0")/.."
export REPLY_CORPUS="${REPLY_CORPUS:-$(pwd)/../shared/corpus}"
if [ -n "${VERBOSE:-}" ]; then export REPLY_CORPUS_VERBOSE=1; fi
cargo test -q --lib mail::reply::tests::corpus_score -- --ignored --nocapture 2>&1 \
  | grep -vE '^(running|test |$)|test result|^\.+$'
