#!/usr/bin/env bash
# Show which appliance services are running and healthy (exit 1 if any is not).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  -h|--help) echo "Usage: scripts/status.sh [--json]   Shows each service's PID and health; exit 1 if one is down."; exit 0 ;;
  ""|--json) ;;
  *) fail "unknown option: $1 (see --help)" ;;
esac
need_installed
exec "$APPLIANCE" status "$@"
