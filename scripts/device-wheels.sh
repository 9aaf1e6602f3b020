#!/usr/bin/env bash
# The wheels the device check (loadtests/device_check.py) needs on a GPU machine that has Python 3.12 and
# torch with numpy, safetensors, psutil and requests, but not the encode path's pydantic and orjson, and
# cannot download: CPython 3.12 manylinux x86_64 wheels, at this project's versions, into .whl/ (ignored),
# which the device command (docs/GPU.md, make device-check) installs with --no-index.
#   scripts/device-wheels.sh [FOLDER]      # default .whl; PYTHON=python3.12 to use another pip
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PYTHON=${PYTHON:-python3}
# The versions .venv runs (pyproject.toml's pins and what they resolved to); tests/unit/test_device_check.py
# checks them against the installed ones, so a new pin fails there until this list follows it.
WHEELS=(
  pydantic==2.14.3           # the request schema (gru_encoder/api/schema.py)
  pydantic-core==2.50.4      # pydantic's compiled core: the version pydantic 2.14.3 requires
  annotated-types==0.8.0     # pydantic's requirements
  typing-extensions==4.16.0
  typing-inspection==0.4.5
  orjson==3.13.0             # the JSON reader and writer (gru_encoder/api/service.py)
  tqdm==4.70.1               # the check's progress bar
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)

rm -rf "$DEST" && mkdir -p "$DEST"  # one version of each: two in the folder would stop the install there
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]/#/--platform=}" -d "$DEST" "${WHEELS[@]}"
ls -l "$DEST"
echo "$(du -sb "$DEST" | cut -f1) bytes in $DEST: carry it (run's carry: [\"$DEST\"]); the tree that travels must stay under 64 MiB"
