#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the integration tests against
# the real binary and socket, and the driver tests against real BMC peers
# (the sushy-tools Redfish emulator and a pyghmi IPMI simulator, which the
# driver tests start on loopback from scripts/peers/ and stop by PID).
#
# Needs: the Rust toolchain and python3 with venv; the peer scripts install
# ipmitool (apt) and the Python peers (a venv under $PEERS_DIR) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# The peers' venv and state stay inside the clone.
export PEERS_DIR=${PEERS_DIR:-$PWD/target/peers}
mkdir -p "$PEERS_DIR"
cargo test --workspace --no-fail-fast "$@"
