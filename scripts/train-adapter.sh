#!/usr/bin/env bash
# Train a LoRA adapter on the owner's own texts, evaluate it and register it
# (the same arguments as `appliance adapters train`; docs/lora.md explains the options).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<USAGE
Usage: scripts/train-adapter.sh NAME SOURCE... [options]
  NAME     the new adapter's name (lower-case letters, digits, '-', '_', '.').
  SOURCE   a folder or file of documents (.md .txt .pdf .docx .html, as the memory
           ingests), a .jsonl of chat examples ({"messages": [...]} per line), or
           memory:<query> (chunks and past turns the memory finds; needs the stack up).
Options:
  --kind style|knowledge   style: learn the owner's prose and turns (default);
                           knowledge: question/answer pairs the core model writes from the texts.
  --tasks KINDS            task kinds it may serve (default chat); gated from the first minute.
  --rank R                 LoRA rank (default 8; at most adapters.max_rank).
  --max-steps N            exactly N optimizer steps (default: --epochs decides).
  --epochs E               passes over the training split (default 1).
  --eval-share S           share of documents held out for evaluation (default 0.1).
  --json                   print the result as JSON.
  Also: --learning-rate --batch-size --seq-len --top-layers --base --model --description
        --checkpoint-every --leakage-questions --nice --quantize (see: appliance adapters train --help).
The data is deduplicated and split by document; the adapter is trained on the served
base's own weights and the target modules the model server accepts, then evaluated
(held-out loss base vs adapter, leakage probe) and registered only if all of it worked.
Resume a cancelled or failed job: appliance adapters train-resume JOB
Exit status: 0 registered, 1 refused or failed (the reason is printed), 2 bad usage, 3 cancelled.
USAGE
}

positional=()
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --json) args+=(--json); shift ;;
    --kind|--tasks|--rank|--max-steps|--epochs|--eval-share|--learning-rate|--batch-size|--seq-len|\
    --top-layers|--base|--model|--description|--checkpoint-every|--leakage-questions|--nice|--quantize)
      [[ $# -ge 2 ]] || { usage >&2; printf 'error: %s needs a value\n' "$1" >&2; exit 2; }
      args+=("$1" "$2"); shift 2 ;;
    --*=*) args+=("${1%%=*}" "${1#*=}"); shift ;;
    -*) usage >&2; printf 'error: unknown option: %s\n' "$1" >&2; exit 2 ;;
    *) positional+=("$1"); shift ;;
  esac
done
[[ ${#positional[@]} -ge 2 ]] || { usage >&2; printf 'error: NAME and at least one SOURCE are required\n' >&2; exit 2; }
name="${positional[0]}"
sources=()
for source in "${positional[@]:1}"; do
  if [[ "$source" == memory:* ]]; then
    sources+=("$source")
  else
    [[ -e "$source" ]] || { printf 'error: %s does not exist\n' "$source" >&2; exit 2; }
    sources+=("$(realpath "$source")")
  fi
done
need_installed
# From the project folder, so the default data directory (./data) and configs are found.
cd "$ROOT"
exec "$APPLIANCE" adapters train "$name" "${sources[@]}" "${args[@]}"
