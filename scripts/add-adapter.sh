#!/usr/bin/env bash
# Register a LoRA adapter (PEFT format) with the appliance: validate it against the
# served base model and copy it into the adapters directory.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<USAGE
Usage: scripts/add-adapter.sh NAME PATH [--tasks chat,code] [--pin] [--description TEXT]
  NAME   how requests name it: "model": "core:NAME" or "adapter": "NAME"
         (lower-case letters, digits, '-', '_', '.').
  PATH   folder written by peft's save_pretrained: adapter_config.json +
         adapter_model.safetensors (pickled .bin files are refused).
  --tasks KINDS        comma-separated task kinds it may serve (default: chat);
                       configs/adapters.yaml may narrow who uses it further.
  --pin                never evict it from the model servers (the owner's core adapter).
  --description TEXT   what it is for.
The adapter is checked first (base model shapes, rank, target modules, size, a complete
safetensors file); a refused adapter leaves nothing behind.
Exit status: 0 registered, 1 refused (the reason is printed), 2 bad usage.
USAGE
}

name="" path=""
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --pin) args+=(--pin); shift ;;
    --tasks|--description)
      [[ $# -ge 2 ]] || { usage >&2; printf 'error: %s needs a value\n' "$1" >&2; exit 2; }
      args+=("$1" "$2"); shift 2 ;;
    --tasks=*|--description=*) args+=("${1%%=*}" "${1#*=}"); shift ;;
    -*) usage >&2; printf 'error: unknown option: %s\n' "$1" >&2; exit 2 ;;
    *)
      if [[ -z "$name" ]]; then name="$1"
      elif [[ -z "$path" ]]; then path="$1"
      else usage >&2; printf 'error: unexpected argument: %s\n' "$1" >&2; exit 2; fi
      shift ;;
  esac
done
[[ -n "$name" && -n "$path" ]] || { usage >&2; printf 'error: NAME and PATH are required\n' >&2; exit 2; }
[[ -e "$path" ]] || { printf 'error: %s does not exist\n' "$path" >&2; exit 2; }
[[ -d "$path" ]] || { printf 'error: %s is not a folder (give the folder peft saved the adapter into)\n' "$path" >&2; exit 2; }
path="$(realpath "$path")"

# The compose deployment (docker compose, .env beside compose.yaml): the adapter must
# land in the `adapters` volume the containers see, not in ./data on the host. It is
# copied into the running api container and registered there, where the LoRA manager
# validates it against the served base (the models volume is mounted read-only).
if [[ "${APPLIANCE_DEPLOYMENT:-}" == "compose" ]] || { [[ -z "${APPLIANCE_DEPLOYMENT:-}" ]] \
     && [[ -f "$ROOT/.env" ]] && grep -q '^COMPOSE_PROFILES=' "$ROOT/.env" && command -v docker >/dev/null; }; then
  command -v docker >/dev/null || fail "docker is not installed, but APPLIANCE_DEPLOYMENT=compose. Fix: install Docker or unset APPLIANCE_DEPLOYMENT."
  cd "$ROOT"
  docker compose ps --status running --services 2>/dev/null | grep -qx api \
    || fail "the api container is not running. Fix: docker compose up -d, then run this again."
  incoming="/data/adapters/.incoming/$name"
  say "copying $path into the api container ($incoming)"
  docker compose exec -T api rm -rf "$incoming"
  docker compose exec -T api mkdir -p /data/adapters/.incoming
  docker compose cp "$path" "api:$incoming"
  status=0
  docker compose exec -T api appliance adapters add "$name" "$incoming" "${args[@]}" || status=$?
  docker compose exec -T api rm -rf "$incoming"
  exit "$status"
fi

need_installed
# From the project folder, so the default data directory (./data) and configs are found.
cd "$ROOT"
exec "$APPLIANCE" adapters add "$name" "$path" "${args[@]}"
