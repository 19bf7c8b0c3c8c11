#!/usr/bin/env bash
# Create the project's virtual environment from a given interpreter, after checking that the
# interpreter can make one: a clear message instead of a traceback when it is too old or lacks
# the venv machinery. Nothing is installed into that interpreter itself.
#
#   deploy/venv.sh [--install-missing] PYTHON VENV_DIR
#
# --install-missing: when the interpreter comes from a Debian/Ubuntu package but lacks ensurepip,
# install its pythonX.Y-venv package with apt-get (root only; `make test` passes it, since it
# installs system packages anyway).
set -euo pipefail

install_missing=0
if [ "${1:-}" = "--install-missing" ]; then
  install_missing=1
  shift
fi
[ $# -eq 2 ] || { echo "usage: $0 [--install-missing] PYTHON VENV_DIR" >&2; exit 2; }
python=$1
venv=$2

die() { echo "venv.sh: $*" >&2; exit 1; }

# One source of truth for the oldest supported version: pyproject.toml's requires-python.
pyproject="$(dirname "$0")/../pyproject.toml"
minimum=$(sed -n 's/^requires-python *= *">= *\([0-9]*\.[0-9]*\)".*/\1/p' "$pyproject")
[ -n "$minimum" ] || die "cannot read requires-python (\">=X.Y\") from $pyproject"

command -v "$python" >/dev/null 2>&1 \
  || die "no Python interpreter '$python'; install Python $minimum or newer and pass it as PYTHON=/path/to/python3"

# Runs under any Python, 2 included, so that an old interpreter gets this message too.
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || die "'$python' does not run as a Python interpreter; pass PYTHON=/path/to/python3"
if [ "$(printf '%s\n%s\n' "$minimum" "$version" | sort -V | head -n 1)" != "$minimum" ]; then
  die "fhirbots needs Python $minimum or newer; '$python' is Python $version. Install a newer one and pass it as PYTHON=/path/to/python$minimum"
fi

has_venv() { "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; }

# The distribution package that owns the interpreter, if any: only then can apt-get supply the
# missing piece (Debian and Ubuntu ship ensurepip separately, in pythonX.Y-venv).
owning_package() {
  command -v dpkg >/dev/null 2>&1 || return 1
  dpkg -S "$(readlink -f "$(command -v "$python")")" >/dev/null 2>&1
}

installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q ' installed$'; }

if ! has_venv; then
  package="python$version-venv"
  # An installed package that still leaves ensurepip missing is not apt-get's to mend (and
  # installing it again would only upgrade it and the interpreter).
  if [ "$install_missing" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
     && owning_package && ! installed "$package"; then
    echo "venv.sh: installing $package (the venv module of '$python')" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$package" >/dev/null
  fi
  if ! has_venv; then
    if owning_package; then
      die "'$python' (Python $version) cannot create virtual environments: install its venv package, apt-get install $package (python3-venv, for the distribution's default python3), or pass another interpreter as PYTHON=..."
    fi
    die "'$python' (Python $version) cannot create virtual environments (its venv or ensurepip module is missing); use an interpreter that has them: PYTHON=/path/to/python3"
  fi
fi

# A half-made environment must not stay behind: make would take its bin/python for a finished one.
trap 'rm -rf "$venv"' ERR
trap 'rm -rf "$venv"; exit 130' INT TERM
"$python" -m venv --clear "$venv"
"$venv/bin/python" -m pip --version >/dev/null
trap - ERR INT TERM
echo "venv.sh: created $venv from '$python' (Python $version)" >&2
