# shellcheck shell=bash
# Fuzzing for the test suite (issue 9 item 10): sourced by scripts/test, not run on its own.
#
# rf_fuzz runs each of the five fuzz targets of fuzz/src/lib.rs — definition (BPMN parser),
# condition (CEL front end), reply (reply reader), token (reply-token verifier), inbound (the
# inbound MIME path of SubmitInboundEmail) — for a bounded time, prints one summary line per
# target (execs, crashes) and returns non-zero when any target found a crash, hang or abort or
# did not run at all. Two engines:
#   structured (default)  tests/fuzz: structure-aware generators + seed mutation, in the normal
#                         build (no second build); a panic is caught and saved, an abort (stack
#                         overflow) or hang ends the run and leaves the input in
#                         target/fuzz/<target>/current-input, turned here into a finding.
#   afl                   cargo-afl (AFL++, coverage-guided, stable toolchain): installs
#                         cargo-afl when missing (it builds its own AFL++ runtime), builds fuzz/
#                         instrumented (a second build of every dependency, in fuzz/target) and
#                         runs `cargo afl fuzz -V SECONDS` per target. For deeper runs by hand;
#                         see the README for why the suite does not use it by default.
# Findings are saved under target/fuzz/<target>/ (structured) or target/fuzz-afl/<target>/
# (afl). Each one becomes a file in fuzz/regressions/<target>/ and a test in
# tests/fuzz_regressions.rs once understood.
#
# Knobs (environment):
#   RF_FUZZ_SECONDS   per target; default 60 when CI=true, else 10
#   RF_FUZZ_ENGINE    structured | afl (default structured)
#   RF_FUZZ_TARGETS   comma-separated subset, e.g. reply,inbound (default: all five)
#   RF_FUZZ_JOBS      targets fuzzed at once by the structured engine (default 2: CI's cores)
#   RF_FUZZ_SEED      the structured engine's random seed (default: time-based, printed)
#   RF_FUZZ_MAX_LEN, RF_FUZZ_HANG_SECONDS: see tests/fuzz/main.rs
#
# Needs from the sourcing script: ROOT, rf_log, rf_warn, rf_error, is_ci.

RF_FUZZ_ALL_TARGETS=(definition condition reply token inbound)

# The libtest name of a target's bounded run in tests/fuzz/main.rs.
rf_fuzz_test_name() {
    case "$1" in
        definition) echo fuzz_definition_parser ;;
        condition) echo fuzz_cel_front_end ;;
        reply) echo fuzz_reply_reader ;;
        token) echo fuzz_token_verifier ;;
        inbound) echo fuzz_inbound_mime_path ;;
        *) return 1 ;;
    esac
}

# Prints the selected targets, one a line; fails on an unknown name.
rf_fuzz_targets() {
    local list="${RF_FUZZ_TARGETS:-}" t
    if [[ -z "$list" ]]; then
        printf '%s\n' "${RF_FUZZ_ALL_TARGETS[@]}"
        return 0
    fi
    for t in ${list//,/ }; do
        if ! rf_fuzz_test_name "$t" >/dev/null; then
            rf_error "RF_FUZZ_TARGETS: unknown target '$t' (known: ${RF_FUZZ_ALL_TARGETS[*]})"
            return 1
        fi
        printf '%s\n' "$t"
    done
}

rf_fuzz_seconds() {
    local seconds="${RF_FUZZ_SECONDS:-}"
    if [[ -z "$seconds" ]]; then
        if is_ci; then seconds=60; else seconds=10; fi
    fi
    if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1 || seconds > 60)); then
        rf_error "RF_FUZZ_SECONDS=$seconds: expected whole seconds from 1 to 60 (the suite's bound per target)"
        return 1
    fi
    echo "$seconds"
}

rf_fuzz() {
    local engine="${RF_FUZZ_ENGINE:-structured}"
    case "$engine" in
        structured) rf_fuzz_structured ;;
        afl) rf_fuzz_afl ;;
        *)
            rf_error "RF_FUZZ_ENGINE=$engine: expected structured or afl"
            return 1
            ;;
    esac
}

rf_fuzz_structured() {
    local seconds targets=() t failed=0
    seconds="$(rf_fuzz_seconds)" || return 1
    rf_fuzz_targets >/dev/null || return 1
    mapfile -t targets < <(rf_fuzz_targets)
    ((${#targets[@]} > 0)) || return 1
    local out="$ROOT/target/fuzz" jobs="${RF_FUZZ_JOBS:-2}" round=0
    mkdir -p "$out"
    for t in "${targets[@]}"; do
        rm -f "$out/$t/current-input" "$out/$t/summary.txt"
    done
    # A target that aborts the process (stack overflow) takes the targets running beside it
    # down too: those are run again, so that one crash never hides what the others would find.
    local remaining=("${targets[@]}")
    while ((${#remaining[@]} > 0 && round < ${#targets[@]})); do
        round=$((round + 1))
        local filters=() status=0 log="$out/run-$round.log"
        for t in "${remaining[@]}"; do
            filters+=("$(rf_fuzz_test_name "$t")")
        done
        rf_log "fuzz (structured): ${remaining[*]}, ${seconds}s each, $jobs at a time"
        {
            RF_FUZZ_SECONDS="$seconds" cargo test --test fuzz -- --exact --nocapture \
                --test-threads="$jobs" "${filters[@]}" 2>&1 | tee "$log"
            status=${PIPESTATUS[0]}
        } || true
        local again=() left=() culprit=0 dead=" "
        for t in "${remaining[@]}"; do
            [[ -f "$out/$t/current-input" ]] && left+=("$t")
        done
        for t in "${left[@]}"; do
            # The process names the thread that overflowed; the watchdog names a hang.
            if grep -qE "thread 'fuzz-$t' .*overflowed its stack|^fuzz $t: HANG" "$log" ||
                ((${#left[@]} == 1)); then
                local saved
                saved="$out/$t/crash-abort-$(sha256sum "$out/$t/current-input" | cut -c1-16)"
                mv "$out/$t/current-input" "$saved"
                rf_error "fuzz $t: the process died (stack overflow, abort or hang) on the input saved as $saved"
                failed=1
                culprit=1
                dead+="$t "
            fi
        done
        for t in "${remaining[@]}"; do
            if [[ -f "$out/$t/current-input" ]]; then
                rm -f "$out/$t/current-input" # interrupted by another target's crash
                again+=("$t")
            elif [[ ! -f "$out/$t/summary.txt" && ${#left[@]} -gt 0 && "$dead" != *" $t "* ]]; then
                again+=("$t") # not started before the process died
            fi
        done
        if ((${#left[@]} > 0 && culprit == 0)); then
            jobs=1 # which one died is unknown: one at a time tells
        fi
        if ((status != 0 && ${#left[@]} == 0)); then
            failed=1 # a panic outside the loop, or a crash reported by the test itself
        fi
        remaining=("${again[@]}")
    done

    echo
    rf_log "fuzz summary (findings under target/fuzz/<target>/):"
    for t in "${targets[@]}"; do
        if [[ -f "$out/$t/summary.txt" ]]; then
            printf '  %s\n' "$(cat "$out/$t/summary.txt")"
            if ! grep -q ', 0 crashes,' "$out/$t/summary.txt"; then
                failed=1
            fi
        elif compgen -G "$out/$t/crash-abort-*" >/dev/null; then
            printf '  fuzz %s: ABORTED: %s\n' "$t" "$(ls -t "$out/$t"/crash-abort-* | head -n 1)"
        else
            rf_error "fuzz $t: did not run (no summary): the fuzz run must never pass without running"
            failed=1
        fi
    done
    if ((failed != 0)); then
        rf_error "fuzzing found crashes or did not run (see above); add each input to fuzz/regressions/<target>/ with a test"
        return 1
    fi
}

# cargo-afl: the binary comes from `cargo install` (it builds AFL++ itself, no LLVM plugins
# needed: rustc's own sanitizer-coverage pass instruments the code).
rf_fuzz_afl() {
    local seconds targets=() t failed=0
    seconds="$(rf_fuzz_seconds)" || return 1
    rf_fuzz_targets >/dev/null || return 1
    mapfile -t targets < <(rf_fuzz_targets)
    if ! cargo afl --version >/dev/null 2>&1; then
        rf_log "cargo-afl missing: cargo install --locked cargo-afl"
        cargo install --locked cargo-afl --version '^0.18' >"$ROOT/target/scripts-test/cargo-afl-install.log" 2>&1 || {
            tail -n 30 "$ROOT/target/scripts-test/cargo-afl-install.log" >&2
            rf_error "could not install cargo-afl: the afl fuzz run cannot start"
            return 1
        }
    fi
    rf_log "fuzz (afl): building fuzz/ instrumented (every dependency again, in fuzz/target)"
    (cd "$ROOT/fuzz" && cargo afl build) || {
        rf_error "cargo afl build failed: the afl fuzz run cannot start"
        return 1
    }
    local out="$ROOT/target/fuzz-afl"
    for t in "${targets[@]}"; do
        local dir="$out/$t"
        rm -rf "$dir"
        mkdir -p "$dir/in"
        # Seeds: the project's own files only (never third-party fixtures).
        local src
        for src in "$ROOT/fuzz/seeds/$t" "$ROOT/fuzz/regressions/$t"; do
            # `*.unfixed`: a known crash whose fix lives elsewhere; it would only be found again.
            [[ -d "$src" ]] && find "$src" -maxdepth 1 -type f ! -name '*.unfixed' -exec cp {} "$dir/in/" \;
        done
        case "$t" in
            definition) cp "$ROOT"/examples/*.bpmn "$dir/in/" ;;
            reply | inbound | token) cp "$ROOT"/tests/replies/*.eml "$dir/in/" ;;
        esac
        [[ -n "$(ls -A "$dir/in")" ]] || printf 'amount > 1' >"$dir/in/seed"
        rf_log "fuzz (afl) $t: ${seconds}s"
        AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
            cargo afl fuzz -V "$seconds" -i "$dir/in" -o "$dir/out" -- "$ROOT/fuzz/target/debug/$t" \
            >"$dir/afl.log" 2>&1 || {
            tail -n 20 "$dir/afl.log" >&2
            rf_error "afl-fuzz did not run for $t (log: $dir/afl.log)"
            failed=1
            continue
        }
        local stats="$dir/out/default/fuzzer_stats" execs crashes hangs
        if [[ ! -f "$stats" ]]; then
            rf_error "fuzz (afl) $t: no fuzzer_stats: afl-fuzz did not run"
            failed=1
            continue
        fi
        execs="$(awk -F': *' '$1 ~ /^execs_done/ {print $2}' "$stats")"
        crashes="$(awk -F': *' '$1 ~ /^saved_crashes/ {print $2}' "$stats")"
        hangs="$(awk -F': *' '$1 ~ /^saved_hangs/ {print $2}' "$stats")"
        printf '  fuzz (afl) %s: %s execs in %ss, %s crashes, %s hangs\n' "$t" "$execs" "$seconds" "${crashes:-?}" "${hangs:-?}"
        if [[ "${execs:-0}" -eq 0 || "${crashes:-1}" -ne 0 || "${hangs:-1}" -ne 0 ]]; then
            rf_error "fuzz (afl) $t: findings (or no execs) in $dir/out/default/{crashes,hangs}"
            failed=1
        fi
    done
    return "$failed"
}
