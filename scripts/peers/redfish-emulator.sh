#!/usr/bin/env bash
# Start or stop a real Redfish BMC emulator (sushy-tools' sushy-emulator, fake systems driver) on loopback.
#   redfish-emulator.sh start [N] [PORT]   N fake systems named node-1..node-N (default 8), port default 8000
#   redfish-emulator.sh stop [PORT]
# Needs python3 with venv. State lives in $PEERS_DIR (default: a folder under ${TMPDIR:-/tmp}).
# Prints the endpoint; systems are at /redfish/v1/Systems/<uuid>, user admin / password password (HTTP basic auth).
# With TLS=1 it serves HTTPS with a certificate for 127.0.0.1 signed by a throwaway CA, $PEERS_DIR/redfish-PORT/ca.pem.
#
# Changed for kiln's tests, from the generic emulator script it started as:
# - the venv shared with ipmi-bmc.sh is created and filled under a lock (tests start both peers at once);
# - start first stops the emulator this script started earlier on PORT (a stale one would answer the health
#   check while the new one fails to bind);
# - waits up to 30 s for the emulator (10 s was short on a busy 2-core machine);
# - optional TLS.
set -euo pipefail
PEERS_DIR=${PEERS_DIR:-${TMPDIR:-/tmp}/kiln-peers}
VENV=$PEERS_DIR/venv
cmd=${1:-start}
if [ "$cmd" = stop ]; then
  port=${2:-8000}; pidf=$PEERS_DIR/redfish-$port.pid
  [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null || true
  rm -f "$pidf"; exit 0
fi
n=${2:-8}; port=${3:-8000}
mkdir -p "$PEERS_DIR"
"$0" stop "$port"
exec 9>"$PEERS_DIR/venv.lock"; flock 9
if [ ! -x "$VENV/bin/sushy-emulator" ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" -q install 'sushy-tools==2.2.0'
fi
flock -u 9; exec 9>&-
dir=$PEERS_DIR/redfish-$port; rm -rf "$dir"; mkdir -p "$dir/state"
scheme=http; curl_tls=()
if [ "${TLS:-0}" = 1 ]; then
  command -v openssl >/dev/null || apt-get install -y -qq openssl >/dev/null
  ( cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
      -subj /CN=kiln-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out req.csr -subj /CN=127.0.0.1 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf 2>/dev/null )
  scheme=https; curl_tls=(--cacert "$dir/ca.pem")
fi
# htpasswd (bcrypt) for admin/password, made with the venv's own bcrypt if present, else no auth
"$VENV/bin/python" - "$dir" "$n" "$port" "$scheme" <<'PY'
import sys, uuid, json
d, n, port, scheme = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
systems = [{"uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"kiln-node-{i}")), "name": f"node-{i}",
            "power_state": "Off", "nics": [{"mac": "52:54:00:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255), "ip": "127.0.0.1"}]}
           for i in range(1, n + 1)]
auth = ""
try:
    import bcrypt
    h = bcrypt.hashpw(b"password", bcrypt.gensalt()).decode()
    open(f"{d}/htpasswd", "w").write(f"admin:{h}\n")
    auth = f"SUSHY_EMULATOR_AUTH_FILE = {d + '/htpasswd'!r}\n"
except ImportError:
    pass
tls = ""
if scheme == "https":
    tls = f"SUSHY_EMULATOR_SSL_CERT = {d + '/cert.pem'!r}\nSUSHY_EMULATOR_SSL_KEY = {d + '/key.pem'!r}\n"
open(f"{d}/emulator.conf", "w").write(
    "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
    f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
    "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
    f"SUSHY_EMULATOR_STATE_DIR = {d + '/state'!r}\n"
    f"SUSHY_EMULATOR_FAKE_SYSTEMS = {json.dumps(systems)}\n" + auth + tls)
json.dump([{"name": s["name"], "uuid": s["uuid"]} for s in systems], open(f"{d}/systems.json", "w"))
PY
"$VENV/bin/sushy-emulator" --config "$dir/emulator.conf" >"$dir/emulator.log" 2>&1 </dev/null &
echo $! >"$PEERS_DIR/redfish-$port.pid"
code=000
for _ in $(seq 1 300); do
  code=$(curl -s "${curl_tls[@]}" -o /dev/null -w '%{http_code}' "$scheme://127.0.0.1:$port/redfish/v1/" || true)
  [ "$code" = 200 ] && break; sleep 0.1
done
[ "$code" = 200 ] || { tail -5 "$dir/emulator.log"; echo "redfish emulator did not start" >&2; exit 1; }
echo "redfish emulator: $scheme://127.0.0.1:$port  systems: $dir/systems.json  auth: $( [ -f "$dir/htpasswd" ] && echo admin/password || echo none)$( [ "$scheme" = https ] && echo "  ca: $dir/ca.pem")"
