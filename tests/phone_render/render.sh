#!/usr/bin/env bash
# Looks right on a phone (issue 3, item 7): renders the sample approval mails (zh-CN and en,
# first mail and reminder) with headless Chromium 390 px wide, checks that nothing scrolls
# sideways and that every answer button is at least 44 px tall, and leaves full-page screenshots
# in target/phone/*.png. Installs Debian's chromium (and a CJK font, so the Chinese mail is drawn
# with real glyphs) when missing. Extra arguments go to the test binary.
#
#   tests/phone_render/render.sh            # then look at target/phone/*.png
#   RF_CHROMIUM=/path/to/chrome tests/phone_render/render.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

have_chromium() {
    [[ -n "${RF_CHROMIUM:-}" ]] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null ||
        command -v google-chrome >/dev/null || command -v google-chrome-stable >/dev/null
}

install() {
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    echo "phone_render: installing $* (apt-get)" >&2
    "${sudo[@]}" apt-get install -y "$@" >/dev/null || {
        "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y "$@" >/dev/null
    }
}

if ! have_chromium; then
    install chromium
fi
if command -v fc-list >/dev/null && [[ -z "$(fc-list :lang=zh 2>/dev/null)" ]]; then
    install fonts-noto-cjk || echo "phone_render: no CJK font: Chinese text will be drawn as boxes (the checks still hold)" >&2
fi

cargo test --test phone_render -- --ignored --nocapture "$@"
ls -1 target/phone/*.png
