#!/usr/bin/env bash
# scripts/doctor.sh: see `appliance doctor --help` (core_agent/ops/gpu_cli.py, docs/gpu.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_installed
cd "$ROOT"
load_models_dir
run_cli doctor "$@"
