#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the integration tests against
# the real binary and socket, and the driver tests against real BMC peers
# (started here on loopback, stopped by PID on exit).
#
# Needs: the Rust toolchain, python3 with venv, and the apt packages
# ipmitool and openssh-server (`.ci/run` installs them; so do the peer scripts).
set -euo pipefail
cd "$(dirname "$0")/.."
# The peers' venvs and state stay inside the clone.
export PEERS_DIR=${PEERS_DIR:-$PWD/target/peers}
mkdir -p "$PEERS_DIR"
peers=scripts/peers
[ -d "$peers" ] || peers=../shared/peers
cleanup() {
  bash "$peers/redfish-emulator.sh" stop 8101 >/dev/null 2>&1 || true
  bash "$peers/ipmi-bmc.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
if [ -x "$peers/redfish-emulator.sh" ] || [ -f "$peers/redfish-emulator.sh" ]; then
  bash "$peers/redfish-emulator.sh" start 4 8101
  bash "$peers/ipmi-bmc.sh" start 4 9701
  export KILN_TEST_REDFISH=http://127.0.0.1:8101 KILN_TEST_IPMI_PORT=9701
fi
cargo test --workspace --no-fail-fast "$@"
