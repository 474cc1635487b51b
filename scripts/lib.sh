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
