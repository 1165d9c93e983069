#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
python -m pip install -q -r requirements-dev.txt
python -m pytest -q "$@"
