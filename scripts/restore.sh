#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh (the appliance must be stopped).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  -h|--help|"") cat <<USAGE
Usage: scripts/restore.sh ARCHIVE.tar.gz
  Stops nothing by itself: run scripts/down.sh first. Checks every file of the archive,
  moves the files it replaces to <data dir>/pre-restore-<time>/ and puts the backup in
  place. Then scripts/up.sh, and 'appliance search ...' shows the restored memory.
USAGE
  [[ -z "${1:-}" ]] && exit 2 || exit 0 ;;
esac
[[ -f "$1" ]] || fail "$1 is not a file"
need_installed
archive="$(realpath "$1")"
cd "$ROOT"
exec "$APPLIANCE" memory restore "$archive"
