#!/usr/bin/env bash
# Stop exactly the processes scripts/up.sh started (by their recorded PIDs).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  -h|--help) echo "Usage: scripts/down.sh   Stops the processes recorded in <data dir>/run/ by scripts/up.sh."; exit 0 ;;
  "") ;;
  *) fail "unknown option: $1 (see --help)" ;;
esac
need_installed
exec "$APPLIANCE" down
