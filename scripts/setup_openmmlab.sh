#!/usr/bin/env bash
# Install the OpenMMLab stack (mmcv 2.1.0 with CPU ops, mmengine, mmdet, mmsegmentation) into a venv.
#
# mmcv comes from the wheel cached by scripts/build_mmcv.sh (built once per machine); a constraint
# file pins every package of the stack so pip never tries to fetch or build another mmcv.
# Idempotent: returns in about a second when everything is installed already.
#
# Usage: scripts/setup_openmmlab.sh VENV_PYTHON
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: scripts/setup_openmmlab.sh VENV_PYTHON   (e.g. .venv/bin/python)" >&2
    exit 2
fi
PY="$1"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PINS=(mmcv==2.1.0 mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2)
# mmengine 0.10.7 resolves `mmdet::`/`mmseg::` base configs with pkg_resources, which setuptools >= 81
# removed; torch 2.14 needs setuptools >= 77.0.3. Both hold for:
SETUPTOOLS="setuptools>=77.0.3,<81"

installed() {
    "$PY" - "${PINS[@]}" <<'PYEOF'
import importlib.metadata as md
import importlib.util
import sys

for pin in sys.argv[1:]:
    name, version = pin.split("==")
    try:
        if md.version(name) != version:
            sys.exit(1)
    except md.PackageNotFoundError:
        sys.exit(1)
sys.exit(0 if importlib.util.find_spec("mmcv._ext") and importlib.util.find_spec("pkg_resources") else 1)
PYEOF
}

if installed; then
    echo "OpenMMLab stack already installed (${PINS[*]})"
    exit 0
fi

wheel="$("$HERE/build_mmcv.sh" "$PY" | tail -n 1)"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
printf '%s\n' "${PINS[@]}" > "$constraints"
# ftfy and regex: imported by mmseg's tokenizer utilities, not declared by mmsegmentation.
"$PY" -m pip install -q -c "$constraints" "$wheel" "${PINS[@]:1}" "$SETUPTOOLS" ftfy regex
installed || { echo "setup_openmmlab.sh: the OpenMMLab stack did not install cleanly into $PY" >&2; exit 1; }
echo "OpenMMLab stack installed (${PINS[*]})"
