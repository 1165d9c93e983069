#!/usr/bin/env bash
# Regenerates the pinned requirements*.txt from the short requirements*.in files with pip-tools.
# The CPU torch wheel on this kind of machine is versioned 2.13.0+cpu; the lock keeps the plain
# release number so that the Space (CUDA) and a laptop resolve the same pin from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in requirements requirements-local requirements-dev; do
  pip-compile -q --strip-extras --allow-unsafe --no-emit-find-links --no-emit-index-url \
    --output-file "$name.txt" "$name.in"
  sed -i 's/^torch==\([0-9.]*\)+cpu$/torch==\1/' "$name.txt"
done
