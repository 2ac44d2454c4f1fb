# Sourced by tools/run and tools/test: creates .venv (once) and installs bmnode into it.
# Usage: bm_venv EXTRAS   (e.g. "test,opencl"); leaves $PY pointing at the venv's python.
bm_venv() {
    local extras="$1" root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cd "$root"
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
        .venv/bin/python -m pip install -q --upgrade pip
    fi
    PY="$root/.venv/bin/python"
    # Editable install: builds the native PoW extension (pow_ext/) in place, next to the sources.
    "$PY" -m pip install -q -e ".[${extras}]"
}
