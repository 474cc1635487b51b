#!/usr/bin/env bash
# Install what is missing, then start the embedded appliance in the background.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  -h|--help) cat <<USAGE
Usage: scripts/up.sh
  Installs what is missing (virtual environment, the project, redis-server), starts
  Redis, the Celery workers, the API and the Streamlit UI in the background, waits
  until each is healthy and prints the URLs, the owner token and a curl line to try.
  Running it again is safe. Stop everything with scripts/down.sh.
  Environment: APPLIANCE_DATA_DIR (default ./data), APPLIANCE_API_PORT (8000),
  APPLIANCE_UI_PORT (8501), APPLIANCE_PROFILE (local), any APPLIANCE_<KEY> override.
USAGE
  exit 0 ;;
  "") ;;
  *) fail "unknown option: $1 (see --help)" ;;
esac
"$ROOT/scripts/install.sh"
say "starting the appliance"
exec "$APPLIANCE" up
