#!/usr/bin/env bash
# After LoRA training on the GPU: start again the model servers scripts/train-pause.sh stopped.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  -h|--help) cat <<USAGE
Usage: scripts/train-resume.sh
  Starts the compose services listed in data/run/train-paused.txt (written by
  scripts/train-pause.sh) with docker compose start, then forgets the list.
USAGE
  exit 0 ;;
  "") ;;
  *) fail "unknown option: $1 (see --help)" ;;
esac
cd "$ROOT"
state="$ROOT/data/run/train-paused.txt"
[[ -f "$state" ]] || fail "nothing was paused for training (no $state)."
mapfile -t services < <(grep -v '^\s*$' "$state" || true)
if [[ ${#services[@]} -gt 0 ]]; then
  say "starting ${services[*]}"
  docker compose start "${services[@]}"
fi
rm -f "$state"
say "model servers resumed"
