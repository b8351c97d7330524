# Sourced by models/build.sh and models/parity.sh (from the repository root): makes sure the
# Python venv in .tools/venv exists with models/requirements.txt installed, and sets $PY.
VENV=.tools/venv
PY=$VENV/bin/python

if [ ! -x "$PY" ]; then
    echo "== creating $VENV" >&2
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -r models/requirements.txt
elif ! "$PY" - <<'PYCHECK' 2>/dev/null; then
import re, sys
from importlib.metadata import version, PackageNotFoundError
for line in open("models/requirements.txt"):
    m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
    if m and version(m.group(1)) != m.group(2):
        sys.exit(1)
PYCHECK
    echo "== installing models/requirements.txt into $VENV" >&2
    "$PY" -m pip install --quiet -r models/requirements.txt
fi
