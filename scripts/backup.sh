#!/usr/bin/env bash
# Back up the appliance's memory (conversations, document registry, Qdrant index) into one archive.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  -h|--help) cat <<USAGE
Usage: scripts/backup.sh [ARCHIVE.tar.gz]
  Writes one archive with the conversation store, the document registry and the Qdrant
  index (local mode; with a Qdrant server the index is rebuilt after restore by
  'appliance memory reindex'). Safe while the appliance runs.
  Default archive: <data dir>/backups/appliance-<time>.tar.gz
USAGE
  exit 0 ;;
  -*) fail "unknown option: $1 (see --help)" ;;
esac
need_installed
args=()
[[ $# -gt 0 ]] && args+=("$(realpath -m "$1")")
cd "$ROOT"   # the default data directory (./data) is relative to the project
exec "$APPLIANCE" memory backup "${args[@]}"
