#!/usr/bin/env bash
# scripts/doctor.sh: see `appliance doctor --help` (core_agent/ops/gpu_cli.py, docs/gpu.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_installed
cd "$ROOT"
# MODELS_DIR from .env (the folder compose.yaml mounts as /models).
if [[ -z "${MODELS_DIR:-}" && -f .env ]]; then
  MODELS_DIR="$(sed -n "s/^MODELS_DIR=['\"]\{0,1\}\([^'\"]*\)['\"]\{0,1\}$/\1/p" .env | tail -n1)"
  [[ -n "$MODELS_DIR" ]] && export MODELS_DIR
fi
run_cli doctor "$@"
