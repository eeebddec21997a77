#!/usr/bin/env bash
# Refreshes the README's screenshots of the teachers' pages: runs the browser tests (seeded
# gateway, Debian's headless Chromium) with their screenshot folder pointed here.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
APA_UI_ARTIFACTS="$PWD/docs/teachers" HF_HUB_OFFLINE=1 PYTHONPATH="$PWD" \
  "$PY" -m pytest -q -p no:cacheprovider tests/ui/test_pages_browser.py
ls -l docs/teachers/*.png
