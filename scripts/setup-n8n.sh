#!/usr/bin/env bash
# Install the real n8n from npm into the project-local folder .n8n/, used by the n8n
# integration tests (tests/test_n8n_*.py) to import and execute our shipped workflows.
# n8n 2.8.4 is the newest release whose package.json "engines" accepts Node 20.
# n8n depends on xlsx through a URL outside the npm registry (cdn.sheetjs.com); the
# "overrides" entry pins the registry's xlsx 0.18.5 so the install needs only npm.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

N8N_DIR="${APPLIANCE_N8N_DIR:-$ROOT/.n8n}"
N8N_VERSION="2.8.4"
XLSX_VERSION="0.18.5"

usage() {
  cat <<USAGE
Usage: scripts/setup-n8n.sh [--force]
  Installs n8n@$N8N_VERSION with npm into $N8N_DIR (binary: $N8N_DIR/node_modules/.bin/n8n).
  Needs Node.js 20.19+ and npm. Takes several minutes the first time; safe to run again
  (a stamp file records a finished install).
  --force   reinstall even when the stamp says it is done.
USAGE
}

parse_force_option "$@"

STAMP="$N8N_DIR/.installed-n8n"
WANT="n8n@$N8N_VERSION xlsx@$XLSX_VERSION node-$(node --version 2>/dev/null || echo none)"
if [[ $FORCE -eq 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$N8N_DIR/node_modules/.bin/n8n" ]]; then
  say "n8n is up to date ($WANT in $N8N_DIR)"
  exit 0
fi

command -v node >/dev/null || fail "Node.js is not installed. Fix: install Node.js 20.19 or newer (e.g. sudo apt-get install nodejs npm)"
command -v npm >/dev/null || fail "npm is not installed. Fix: sudo apt-get install npm"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || fail "n8n $N8N_VERSION needs Node.js 20.19 or newer (found $(node --version)). Fix: install a newer Node.js"

mkdir -p "$N8N_DIR"
cat > "$N8N_DIR/package.json" <<JSON
{
  "name": "appliance-n8n-test-install",
  "private": true,
  "description": "n8n for the appliance's integration tests (scripts/setup-n8n.sh writes this file)",
  "dependencies": { "n8n": "$N8N_VERSION" },
  "overrides": { "xlsx": "$XLSX_VERSION" }
}
JSON

say "installing n8n@$N8N_VERSION into $N8N_DIR (several minutes; npm shows progress below)"
(cd "$N8N_DIR" && npm install --no-audit --no-fund --loglevel=http) \
  || fail "npm could not install n8n@$N8N_VERSION. Check the network to the npm registry and the log above."

"$N8N_DIR/node_modules/.bin/n8n" --version >/dev/null \
  || fail "n8n was installed but does not start. Remove $N8N_DIR and run again with --force."
echo "$WANT" > "$STAMP"
say "n8n ready: $N8N_DIR/node_modules/.bin/n8n ($("$N8N_DIR/node_modules/.bin/n8n" --version))"
