#!/usr/bin/env bash
# Start or stop real IPMI-over-LAN (RMCP+, lanplus) BMC simulators on loopback, driven by ipmitool as the client.
#   ipmi-bmc.sh start [N] [FIRST_PORT]   N simulated BMCs on 127.0.0.1 ports FIRST_PORT.. (default 4 from 9623)
#   ipmi-bmc.sh stop [FIRST_PORT]
# Each BMC: user admin / password password; power on/off/soft/cycle/reset, chassis bootdev, bootparam get 5.
# Limitation: the simulator does not keep the 'persistent' boot flag (bootparam 5 always reads 'next boot only').
# Built on pyghmi's BMC server (pyghmi.ipmi.bmc), in a venv under $PEERS_DIR; needs apt package ipmitool for clients.
# Try: ipmitool -I lanplus -H 127.0.0.1 -p 9623 -U admin -P password power status
#
# Changed for kiln's tests, from the generic simulator script it started as:
# - pid, log and simulator files are per FIRST_PORT, so one user's `stop` does not kill another's simulators;
# - the venv shared with redfish-emulator.sh, and the apt install, happen under a lock (tests start both at once);
# - start first stops the simulators this script started earlier on FIRST_PORT.
# - pyghmi's server survives a client that reuses an old client's UDP port (see the comment in ipmi_bmcs.py below).
set -euo pipefail
PEERS_DIR=${PEERS_DIR:-${TMPDIR:-/tmp}/kiln-peers}
VENV=$PEERS_DIR/venv
cmd=${1:-start}
if [ "$cmd" = stop ]; then
  first=${2:-9623}; pidf=$PEERS_DIR/ipmi-$first.pid
  [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null || true
  rm -f "$pidf"; exit 0
fi
n=${2:-4}; first=${3:-9623}
pidf=$PEERS_DIR/ipmi-$first.pid
mkdir -p "$PEERS_DIR"
"$0" stop "$first"
exec 9>"$PEERS_DIR/venv.lock"; flock 9
command -v ipmitool >/dev/null || { apt-get install -y -qq ipmitool >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq ipmitool; }; }
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import pyghmi' 2>/dev/null || "$VENV/bin/pip" -q install 'pyghmi==1.6.19'
flock -u 9; exec 9>&-
cat >"$PEERS_DIR/ipmi_bmcs.py" <<'PY'
import sys
import traceback
import pyghmi.ipmi.bmc as bmc
import pyghmi.ipmi.private.serversession as serversession
import pyghmi.ipmi.private.session as session

# pyghmi 1.6.19 keeps every client session, keyed by the client's address and
# port, for ever (close_server_session does nothing). A new client that gets
# an old client's UDP port is handed to the old session; if it sends twice
# before the first packet is handled (a retransmission on a busy machine),
# the first packet drops the old session and the second calls
# ServerSession.sessionless_data, which does not exist: the exception ends
# listen() and every BMC of this process goes silent. The stale sessions
# pile up over a test run, and the odds of such a collision with them.
# Mended here: the second packet goes to its BMC as a new client's would;
# an exception in the I/O thread costs the packets of that pass (their
# clients retransmit), not the thread; and one in the loop costs that pass,
# not the process. Each is logged. Sessions are still kept for ever, as
# pyghmi does: forgetting a closed one would leave a retransmitted Close
# Session unanswered.
def _sessionless_data(self, data, sockaddr):
    self.bmc.sessionless_data(data, sockaddr)
serversession.ServerSession.sessionless_data = _sessionless_data

_graball = session._io_graball
def _io_graball(sockets, waiters):
    try:
        return _graball(sockets, waiters)
    except Exception:
        traceback.print_exc()
        return []
session._io_graball = _io_graball

class SimBmc(bmc.Bmc):
    def __init__(self, port):
        super().__init__({'admin': 'password'}, port=port, address='127.0.0.1')
        self.powerstate, self.bootdevice = 'off', 'default'
    def get_boot_device(self): return self.bootdevice
    def set_boot_device(self, dev): self.bootdevice = dev
    def cold_reset(self): pass
    def get_power_state(self): return self.powerstate
    def power_off(self): self.powerstate = 'off'
    def power_on(self): self.powerstate = 'on'
    def power_cycle(self): self.powerstate = 'on'
    def power_reset(self): self.powerstate = 'on'
    def power_shutdown(self): self.powerstate = 'off'
    def is_active(self): return self.powerstate == 'on'

n, first = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    SimBmc(first + i)
while True:  # serves every BMC above from pyghmi's shared event loop, forever
    try:
        bmc.Bmc.listen(timeout=30)
    except Exception:
        traceback.print_exc()
PY
"$VENV/bin/python" "$PEERS_DIR/ipmi_bmcs.py" "$n" "$first" >"$PEERS_DIR/ipmi-$first.log" 2>&1 </dev/null &
echo $! >"$pidf"
ok=0
for _ in $(seq 1 100); do
  IPMI_PASSWORD=password ipmitool -I lanplus -H 127.0.0.1 -p "$first" -U admin -E -R 1 -N 1 power status >/dev/null 2>&1 && { ok=1; break; }
  sleep 0.2
done
[ "$ok" = 1 ] || { tail -5 "$PEERS_DIR/ipmi-$first.log"; echo "IPMI simulator did not answer" >&2; exit 1; }
echo "ipmi simulators: 127.0.0.1 ports $first..$((first + n - 1)), admin/password, lanplus"
