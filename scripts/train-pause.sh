#!/usr/bin/env bash
# Before LoRA training on the GPU: stop the model servers the training plan says must
# make room (appliance train-plan), and remember them for scripts/train-resume.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  -h|--help) cat <<USAGE
Usage: scripts/train-pause.sh [--rank R] [--seq-len N] [--micro-batch B]
  Computes the training plan (configs/gpu-stack.yaml; same options as
  'appliance train-plan'), prints it, and stops the compose services it must pause
  (docker compose stop ...). Their names are kept in data/run/train-paused.txt, so
  scripts/train-resume.sh starts exactly those again. Chat on the core keeps answering
  whenever the plan can keep vllm-core running (QLoRA beside it).
  Exit 1 when no training method fits the card.
USAGE
  exit 0 ;;
esac
need_installed
cd "$ROOT"
state="$ROOT/data/run/train-paused.txt"
if [[ -s "$state" ]]; then
  fail "servers are already paused for training ($(tr '\n' ' ' < "$state")). Fix: run scripts/train-resume.sh first."
fi
run_cli train-plan "$@"
plan="$("$APPLIANCE" train-plan --json "$@")" || fail "no training method fits; see the plan above."
mapfile -t services < <(printf '%s' "$plan" | "$VENV/bin/python" -c 'import json,sys; print("\n".join(json.load(sys.stdin)["pause"] or []))')
mkdir -p "$(dirname "$state")"
if [[ ${#services[@]} -eq 0 ]]; then
  say "nothing to pause: training fits beside the running servers"
  : > "$state"
  exit 0
fi
say "stopping ${services[*]}"
printf '%s\n' "${services[@]}" > "$state"
docker compose stop "${services[@]}"
say "paused. Train now (docs/lora.md), then run scripts/train-resume.sh"
