#!/usr/bin/env bash
# Render a report.html headless with Chromium to a PNG screenshot, to check how it looks in a browser.
#
#   scripts/render_report.sh [REPORT_HTML] [OUT_PNG] [WIDTHxHEIGHT]
#
# With no REPORT_HTML, a synthetic demo study (reports/demo.py) is written to a temporary results folder
# and its report is built first. Needs Debian's chromium (as root: apt-get install -y chromium); the unit
# tests do not. Nothing is fetched from the network: the page is self-contained and the flags below keep
# Chromium from calling home.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
html="${1:-}"
out="${2:-/tmp/hybridlab-report.png}"
size="${3:-1280x2000}"

browser="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$browser" ]]; then
    echo "render_report: chromium not found (as root: apt-get install -y chromium)" >&2
    exit 2
fi

if [[ -z "$html" ]]; then
    tmp="$(mktemp -d)"
    (cd "$here" && python -m reports.demo "$tmp/demo" >/dev/null \
        && python -m hybridlab.cli report demo --results-dir "$tmp")
    html="$tmp/demo/report/report.html"
fi
[[ -f "$html" ]] || { echo "render_report: no such file: $html" >&2; exit 2; }
html="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$out" --window-size="${size/x/,}" "file://$html" >/dev/null 2>&1
[[ -s "$out" ]] || { echo "render_report: chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
