#!/usr/bin/env bash
# Installs the Debian packages the test suite drives as real programs, when they are absent:
# Chromium for the browser tests (tests/browser) and Prometheus with promtool for the
# observability checks (deploy/observability). Run by `make test`; a no-op once installed.
set -euo pipefail

# command -> Debian package that provides it
declare -A PACKAGES=(
    [chromium]=chromium
    [prometheus]=prometheus
    [promtool]=prometheus
)

missing=()
for command in "${!PACKAGES[@]}"; do
    command -v "$command" >/dev/null || missing+=("${PACKAGES[$command]}")
done
((${#missing[@]})) || exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "system-packages: missing ${missing[*]}; install them with apt-get (needs root)" >&2
    exit 1
fi
echo "system-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Services are not started on install (a container's policy-rc.d, or nothing to start them).
if ! { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 80 "$log" >&2
    exit 1
fi
