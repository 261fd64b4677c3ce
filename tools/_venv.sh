# Sourced by tools/demo and tools/run-tests: makes (or reuses) the virtual
# environment that rcp runs from, so that nothing is installed into the
# system's Python (Debian 12 refuses that: PEP 668, externally managed).
#
#   RCP_VENV   where the environment lives (default: .venv in the checkout)
#   PYTHON     the interpreter to build it from (default: python3)

RCP_VENV=${RCP_VENV:-$PWD/.venv}
PYTHON=${PYTHON:-python3}

_apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$0: needs the Debian packages: $* (run as root, or: sudo apt-get install $*)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${_RCP_APT_UPDATED:-}" ]; then
        apt-get update -qq
        _RCP_APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

rcp_venv() {
    if ! command -v "$PYTHON" >/dev/null; then
        _apt_install python3
    fi
    if [ ! -x "$RCP_VENV/bin/python" ]; then
        # Debian's python3 makes virtual environments only with python3-venv
        # (ensurepip); without it "python3 -m venv" fails half-way.
        if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
            _apt_install python3-venv
        fi
        rm -rf "$RCP_VENV"
        "$PYTHON" -m venv "$RCP_VENV"
    fi
    VENV_PYTHON=$RCP_VENV/bin/python
}

# pip into the environment, quietly; extra arguments are pip's.
rcp_pip_install() {
    "$VENV_PYTHON" -m pip install -q --disable-pip-version-check "$@"
}
