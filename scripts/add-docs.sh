#!/usr/bin/env bash
# Add the owner's documents (files or folders, recursively) to the appliance's memory.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<USAGE
Usage: scripts/add-docs.sh [--prune] [--json] PATH...
  Ingests .md/.txt/.pdf/.docx/.html files (folders recursively) into the memory of the
  running appliance (start it with ./scripts/up.sh). Unchanged files are skipped, changed
  files replace their old version, bad files are reported by name and skipped.
  --prune  also forget documents under these folders whose files were deleted.
  --json   print the report as JSON.
Exit status: 0 all files ingested, 1 some files were skipped (listed), 2 bad usage.
USAGE
}

[[ $# -gt 0 ]] || { usage >&2; exit 2; }
args=()
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --prune|--json) args+=("$arg") ;;
    -*) usage >&2; printf 'error: unknown option: %s\n' "$arg" >&2; exit 2 ;;
    *) [[ -e "$arg" ]] || { printf 'error: %s does not exist\n' "$arg" >&2; exit 2; }
       args+=("$(realpath "$arg")") ;;
  esac
done
need_installed
# From the project folder, so the default data directory (./data, with the owner token) is found.
cd "$ROOT"
exec "$APPLIANCE" docs add "${args[@]}"
