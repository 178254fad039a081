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
# The whole output is also kept in target/test-output.log. A failing run
# ends with each failure's panic message and any peer log with a Python
# traceback, since a reader who sees only the head and tail of a long
# output would otherwise miss them (they are printed mid-way, after the
# test binary that failed).
mkdir -p target
log=target/test-output.log
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
  echo
  echo "==== the failures again (whole output: $log) ===="
  awk '/^---- .* stdout ----$/ { name = $2; shown = 0 }
       /panicked at/ && name != "" { print "---- " name; shown = 1; n = 0 }
       shown && n < 12 { print; n++ }
       shown && /^$/ { shown = 0 }' "$log"
  for peer_log in "$PEERS_DIR"/*.log; do
    [ -f "$peer_log" ] && grep -q Traceback "$peer_log" && { echo "---- $peer_log"; tail -n 20 "$peer_log"; }
  done
fi
exit "$status"
