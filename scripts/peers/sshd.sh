#!/usr/bin/env bash
# Start or stop a private OpenSSH server on loopback, standing for N nodes at 127.0.0.2 .. 127.0.0.(N+1).
#   sshd.sh start [N] [PORT]   default N=8, PORT=2222; key-based login as the current user
#   sshd.sh stop
# Prints the client key to use:  ssh -p PORT -i KEY -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null 127.0.0.2 true
# Needs the apt package openssh-server (installed if missing).
set -euo pipefail
PEERS_DIR=${PEERS_DIR:-${TMPDIR:-/tmp}/kiln-peers}
d=$PEERS_DIR/sshd; pidf=$d/sshd.pid
cmd=${1:-start}
if [ "$cmd" = stop ]; then
  [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null || true
  rm -f "$pidf"; exit 0
fi
n=${2:-8}; port=${3:-2222}
[ -x /usr/sbin/sshd ] || { apt-get install -y -qq openssh-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq openssh-server; }; }
mkdir -p "$d" /run/sshd; chmod 700 "$d"
[ -f "$d/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$d/host_key"
[ -f "$d/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$d/client_key"
cp "$d/client_key.pub" "$d/authorized_keys"; chmod 600 "$d/authorized_keys"
{
  echo "Port $port"
  for i in $(seq 2 $((n + 1))); do echo "ListenAddress 127.0.0.$i"; done
  echo "HostKey $d/host_key"
  echo "PidFile $pidf"
  echo "AuthorizedKeysFile $d/authorized_keys"
  echo "PasswordAuthentication no"
  echo "KbdInteractiveAuthentication no"
  echo "PermitRootLogin prohibit-password"
  echo "StrictModes no"
  echo "UsePAM no"
  echo "MaxStartups 512:30:1024"
  echo "MaxSessions 64"
  echo "LogLevel ERROR"
  echo "Subsystem sftp internal-sftp"
} >"$d/sshd_config"
/usr/sbin/sshd -f "$d/sshd_config" -E "$d/sshd.log"
opts=(-p "$port" -i "$d/client_key" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
for _ in $(seq 1 50); do ssh "${opts[@]}" 127.0.0.2 true 2>/dev/null && break; sleep 0.1; done
ssh "${opts[@]}" 127.0.0.2 true || { tail -5 "$d/sshd.log"; echo "sshd did not accept a login" >&2; exit 1; }
echo "sshd: 127.0.0.2..127.0.0.$((n + 1)) port $port, key $d/client_key"
