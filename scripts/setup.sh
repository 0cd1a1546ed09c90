#!/usr/bin/env bash
# Create .venv and install the toolkit with the exact versions of constraints.txt.
# Python 3.10-3.13 (3.11 preferred when present; PYTHON=/path/to/python chooses another).
# Idempotent: a second run only checks that everything is installed.
# Into an existing environment that already has torch, use instead (keeps its torch):
#   pip install -e . --no-deps && pip install fvcore iopath yacs pytorch-fid tabulate
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    for candidate in python3.11 python3.12 python3.13 python3.10 python3; do
        if command -v "$candidate" >/dev/null && "$candidate" --version >/dev/null 2>&1; then
            PYTHON=$candidate
            break
        fi
    done
fi
if ! "${PYTHON:-python3}" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))'; then
    echo "setup.sh: Python 3.10-3.13 is required; found $("${PYTHON:-python3}" --version 2>&1)." \
         "Set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup.sh: creating .venv with $("$PYTHON" --version 2>&1) ($(command -v "$PYTHON"))"
    "$PYTHON" -m venv .venv
fi
# constraints.txt holds the exact versions of the default set-up, resolved for Python 3.11 (some of
# its pins, e.g. numpy, have no wheels for 3.10); other versions get pyproject's ranges.
pins=(-c constraints.txt)
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup.sh: $(.venv/bin/python --version): installing pyproject.toml's version ranges" \
         "(constraints.txt pins the Python 3.11 set-up)" >&2
    pins=()
fi
pinned() {  # "name==version" of the packages named, as constraints.txt pins them
    for name in "$@"; do grep -i "^$name==" constraints.txt || echo "$name"; done | tr '\n' ' '
}
if [ ${#pins[@]} -gt 0 ]; then versions="$(pinned torch torchvision numpy scipy pandas matplotlib fvcore pytorch-fid)"
else versions="torch torchvision numpy scipy pandas matplotlib fvcore pytorch-fid"; fi
echo "setup.sh: installing the toolkit (editable) and its dependencies into .venv: ${versions}and the" \
     "test / notebook extras; the first time this downloads about 1 GB and takes a few minutes, later runs" \
     "only check (seconds)"
start=$SECONDS
.venv/bin/python -m pip install -q --disable-pip-version-check "${pins[@]}" -e ".[dev]" 2>&1 \
    | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import torch, torchvision, fvcore, models" || { echo "setup.sh: install failed" >&2; exit 1; }
echo "setup.sh: .venv ready in $((SECONDS - start)) s ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
