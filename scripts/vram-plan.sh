#!/usr/bin/env bash
# Print the GPU memory plan for the production stack (configs/gpu-stack.yaml) and, with
# --write-env, write the vLLM arguments compose.yaml reads into .env.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  -h|--help) cat <<USAGE
Usage: scripts/vram-plan.sh [--json] [--write-env] [--env-file PATH] [--config PATH]
  Reads configs/gpu-stack.yaml (models, cards, the owner's knobs) and prints per vLLM
  server: weights, KV cache (context x sequences), LoRA slots, overhead, and the
  --gpu-memory-utilization it implies; then the total per card. Exit 1 when the plan
  does not fit (the message names the biggest item and what to change).
  --write-env   write the plan into .env (created from .env.example if missing);
                run it after every change to configs/gpu-stack.yaml, before
                'docker compose up -d'.
USAGE
  exit 0 ;;
esac
need_installed
exec "$APPLIANCE" vram-plan "$@"
