#!/usr/bin/env bash
# Install Chromium (Debian's package) for the dashboard's browser tests.
# Idempotent: safe to run again. Prints the browser's path.
#
# The tests launch this browser by its path (Playwright's own browser download needs the
# internet, which a CI machine may not have); FHIRBOTS_CHROMIUM points them at another one.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

die() { echo "browser/setup.sh: $*" >&2; exit 1; }

if [ ! -x "$CHROMIUM" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
[ -x "$CHROMIUM" ] || die "the chromium package did not install $CHROMIUM"

echo "$CHROMIUM"
