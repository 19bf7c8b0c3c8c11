#!/usr/bin/env bash
# Prove the image's steps without a container engine: build the wheels as the Dockerfile's
# builder stage does, install them as its runtime stage does into a fresh virtual environment
# (no editable install, no source tree on the path), then start its entrypoint and command,
# `fhirbots serve`, in embedded mode on a free port, as a non-root user that can write only its
# data dir and a temporary dir (when run as root), poll the image's HEALTHCHECK until it passes,
# and stop the server with SIGTERM: it must exit 0.
#
#   deploy/docker/verify.sh [PYTHON]
#
# PYTHON: the interpreter to build and install with (the image uses Python 3.11); by default the
# first of /usr/bin/python3 and python3 that is 3.11 or newer and can make virtual environments
# (a system interpreter first: the non-root user must be able to run it, which an interpreter
# under root's home is not).
#
# Wheels come from PyPI through pip's cache, like `docker build` without a cache mount.
set -euo pipefail

usable() {
  "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}
python=${1:-}
if [ -z "$python" ]; then
  for candidate in /usr/bin/python3 python3; do
    if usable "$candidate"; then python=$candidate; break; fi
  done
fi
[ -n "$python" ] && usable "$python" \
  || { echo "verify.sh: no Python 3.11+ interpreter with venv; pass one as PYTHON" >&2; exit 1; }
root=$(cd "$(dirname "$0")/../.." && pwd)
dockerfile="$root/deploy/docker/Dockerfile"
uid=$(sed -n 's/^ARG FHIRBOTS_UID=\([0-9]*\)$/\1/p' "$dockerfile")
[ -n "$uid" ] || { echo "verify.sh: no ARG FHIRBOTS_UID in $dockerfile" >&2; exit 1; }

work=$(mktemp -d)
server=
# The server runs in a process group of its own (setsid), so that whatever it started goes too.
cleanup() {
  if [ -n "$server" ]; then kill -KILL -- "-$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "verify.sh: $*" >&2; }

# Builder stage: the same COPY lines (the context the Dockerfile sees), then `pip wheel`.
step "build context and wheels"
mkdir -p "$work/src"
(cd "$root" && cp -a pyproject.toml README.md src engine bots subscriptions schemas "$work/src/")
find "$work/src" \( -name __pycache__ -o -name '*.egg-info' -o -name node_modules \) -prune \
  -exec rm -rf {} +
(cd "$work/src" && "$python" -m pip wheel --quiet --disable-pip-version-check \
  --wheel-dir "$work/wheels" .)

# Runtime stage: a fresh venv from the wheels alone (--no-index), then the healthcheck script.
step "install the wheels into a fresh virtual environment"
"$python" -m venv "$work/opt"
"$work/opt/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
  --no-index --find-links "$work/wheels" fhirbots
install -m 0755 "$root/deploy/docker/healthcheck.py" "$work/opt/bin/fhirbots-healthcheck"
rm -rf "$work/src" "$work/wheels"

# The read-only layout: everything but the data dir and /tmp unwritable for the server's user.
mkdir -p "$work/data" "$work/tmp"
chmod -R a-w "$work/opt"
chmod 0755 "$work"
as_user=()
if [ "$(id -u)" = 0 ]; then
  chown "$uid:$uid" "$work/data" "$work/tmp"
  as_user=(setpriv --reuid "$uid" --regid "$uid" --clear-groups)
  if ! "${as_user[@]}" "$work/opt/bin/python" -c pass 2>/dev/null; then
    step "FAILED: uid $uid cannot run $python (it lives where only root can read)"
    exit 1
  fi
  step "running as uid $uid"
fi
port=$("$work/opt/bin/python" -c \
  'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The image's environment, nothing of this shell's (no PYTHONPATH, no virtual env).
image_env=(
  env -i
  PATH="$work/opt/bin:/usr/local/bin:/usr/bin:/bin"
  PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
  HOME="$work/data" TMPDIR="$work/tmp"
  FHIRBOTS_DATA_DIR="$work/data" FHIRBOTS_HOST=127.0.0.1 FHIRBOTS_PORT="$port"
)

step "no source tree on the path"
(cd "$work/data" && "${image_env[@]}" python -c '
import sys, fhirbots
assert "site-packages" in fhirbots.__file__, fhirbots.__file__
assert not any(p.endswith("/src") for p in sys.path), sys.path
print("fhirbots from", fhirbots.__file__)')

step "fhirbots serve on 127.0.0.1:$port"
(cd "$work/data" && exec setsid "${as_user[@]}" "${image_env[@]}" fhirbots serve) &
server=$!

# HEALTHCHECK until it passes; bounded, and no longer once the server has exited.
ready=0
for _ in $(seq 1 240); do
  if ! kill -0 "$server" 2>/dev/null; then break; fi
  if (cd "$work/data" && "${image_env[@]}" fhirbots-healthcheck 2>/dev/null); then
    ready=1
    break
  fi
  sleep 0.5
done
if [ "$ready" != 1 ]; then
  step "FAILED: the healthcheck (http://127.0.0.1:$port/readyz) never passed"
  (cd "$work/data" && "${image_env[@]}" fhirbots-healthcheck) || true
  exit 1
fi
step "ready: the healthcheck passed"

step "SIGTERM"
kill -TERM "$server"
status=0
wait "$server" || status=$?
if [ "$status" != 0 ]; then
  step "FAILED: fhirbots serve exited $status after SIGTERM"
  exit 1
fi
# In a container the runtime ends the rest with the entrypoint; here they are said and ended.
for _ in $(seq 1 20); do
  kill -0 -- "-$server" 2>/dev/null || break
  sleep 0.5
done
if kill -0 -- "-$server" 2>/dev/null; then
  step "warning: processes of the server outlived it: $(pgrep -g "$server" | tr '\n' ' ')"
fi
kill -KILL -- "-$server" 2>/dev/null || true
server=
step "OK: built, installed, served, ready, stopped with exit status 0"
