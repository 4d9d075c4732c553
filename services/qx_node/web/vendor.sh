#!/bin/bash
# Vendor the web client's libraries from the npm registry into vendor/ (committed, shipped as package data).
#   vendor.sh          install exactly package-lock.json's versions (npm ci: integrity-checked) in a temporary
#                      directory and copy the files the client loads into vendor/, plus vendor/SHA256SUMS
#   vendor.sh --check  the same into a temporary directory, then compare with vendor/ (exit 1 on a difference)
# No install scripts run (--ignore-scripts); nothing is built or transformed: the files are the packages' own.
# Needs node and npm (Debian: apt-get install npm). Run by `make web-assets` / `make web-assets-check`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "vendor.sh: error: $1" >&2; [ -z "${2:-}" ] || echo "vendor.sh: hint: $2" >&2; exit 3; }
command -v npm >/dev/null || die "npm is missing" "apt-get install npm (Debian), then retry"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
nm=$work/node_modules out=$work/vendor
mkdir -p "$out/preact" "$out/htm" "$out/uplot" "$out/novnc"
cp "$nm/preact/dist/preact.module.js" "$nm/preact/hooks/dist/hooks.module.js" "$nm/preact/LICENSE" "$out/preact/"
cp "$nm/htm/dist/htm.module.js" "$nm/htm/LICENSE" "$out/htm/"
cp "$nm/uplot/dist/uPlot.esm.js" "$nm/uplot/dist/uPlot.min.css" "$nm/uplot/LICENSE" "$out/uplot/"
cp -r "$nm/@novnc/novnc/core" "$nm/@novnc/novnc/vendor" "$nm/@novnc/novnc/LICENSE.txt" "$out/novnc/"
(cd "$out" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
if [ "${1:-}" = --check ]; then
    diff -r "$out" "$here/vendor" && echo "vendor.sh: vendor/ matches package-lock.json" && exit 0
    echo "vendor.sh: error: vendor/ differs from what package-lock.json installs" >&2
    echo "vendor.sh: hint: run services/qx_node/web/vendor.sh and commit vendor/" >&2
    exit 1
fi
rm -rf "$here/vendor"
cp -r "$out" "$here/vendor"
echo "vendor.sh: vendor/ written ($(wc -l < "$out/SHA256SUMS") files)"
