# Shared helpers for scripts/*.sh (sourced, not run).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
APPLIANCE="$VENV/bin/appliance"

say()  { printf '==> %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run `appliance` from the project's virtual environment, installing it first if needed.
need_installed() {
  if [[ ! -x "$APPLIANCE" ]]; then
    fail "the appliance is not installed yet. Fix: run ./scripts/up.sh (or ./scripts/install.sh) first."
  fi
}

# Run an `appliance` sub-command for a wrapper script; a usage error (typer's exit 2)
# is said the way every script says it.
run_cli() {
  local code=0
  "$APPLIANCE" "$@" || code=$?
  if [[ $code -eq 2 ]]; then
    fail "unknown option or argument for 'appliance $1' (see $(basename "$0") --help)"
  fi
  return $code
}

# MODELS_DIR from .env (the folder compose.yaml mounts as /models), unless already set.
load_models_dir() {
  if [[ -z "${MODELS_DIR:-}" && -f "$ROOT/.env" ]]; then
    MODELS_DIR="$(sed -n "s/^MODELS_DIR=['\"]\{0,1\}\([^'\"]*\)['\"]\{0,1\}$/\1/p" "$ROOT/.env" | tail -n1)"
    if [[ -n "$MODELS_DIR" ]]; then export MODELS_DIR; fi
  fi
  return 0
}

# For the setup scripts that take only --force (and --help, which calls their usage()):
# sets FORCE=1 when asked to reinstall despite a finished-install stamp.
parse_force_option() {
  FORCE=0
  local arg
  for arg in "$@"; do
    case "$arg" in
      -h|--help) usage; exit 0 ;;
      --force) FORCE=1 ;;
      *) usage >&2; fail "unknown option: $arg" ;;
    esac
  done
}
