#!/usr/bin/env bash
# Installs OpenStack Ironic's own clients, the ones `tests/it/ironic.rs`
# drives kiln's HTTP API with: python-ironicclient (the `baremetal` command)
# and openstacksdk, pinned, in a venv inside the clone. Does nothing when
# they are there already. Prints the venv's path.
#   ironic-clients.sh [VENV]    default: target/ironic-venv
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${IRONIC_VENV:-$PWD/target/ironic-venv}}
mkdir -p "$(dirname "$VENV")"
# Tests of several processes may ask at once: one installs, the others wait.
exec 9>"$VENV.lock"; flock 9
if ! [ -x "$VENV/bin/baremetal" ] || ! "$VENV/bin/python" -c 'import openstack, ironicclient' 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    'python-ironicclient==6.3.0' 'openstacksdk==4.22.0' >"$VENV.install.log" 2>&1 \
    || { cat "$VENV.install.log" >&2; exit 1; }
fi
echo "$VENV"
