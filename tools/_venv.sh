# Sourced by tools/run and tools/test: creates .venv (once) and installs bmnode into it.
# Usage: bm_venv EXTRAS   (e.g. "test,opencl"); leaves $PY pointing at the venv's python.
# The (editable) install is redone only when the build inputs or the extras change: Python
# sources are used in place, so editing them needs no reinstall.
bm_venv() {
    local extras="$1" root stamp want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cd "$root"
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
        .venv/bin/python -m pip install -q --upgrade pip
    fi
    PY="$root/.venv/bin/python"
    stamp=".venv/.bmnode-install-${extras//,/-}"
    want="$(cat pyproject.toml setup.py pow_ext/* 2>/dev/null | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        # Editable install: builds the native PoW extension (pow_ext/) in place, next to the sources.
        "$PY" -m pip install -q -e ".[${extras}]"
        echo "$want" > "$stamp"
    fi
}
