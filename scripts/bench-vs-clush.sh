#!/usr/bin/env bash
# Runs `kiln bench exec` beside ClusterShell's `clush -R exec` on the same
# node set (1,000 nodes, `true`, fanout 64) and prints both wall times, peak
# RSS and the ratio. ClusterShell comes from PyPI into a temporary venv.
#   scripts/bench-vs-clush.sh [NODES] [FANOUT]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}; f=${2:-64}
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv" && "$venv/bin/pip" -q install ClusterShell
[ -x target/release/kiln ] || cargo build --release -q
for tool in time bc; do command -v "$tool" >/dev/null || { apt-get install -y -qq "$tool" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$tool"; }; }; done
kiln_out=$(/usr/bin/time -f 'rss_kb %M' target/release/kiln bench exec --nodes "$n" --fanout "$f" 2>&1)
kiln_wall=$(awk '$1 == "exec.time" {print $2}' <<<"$kiln_out")
kiln_rss=$(awk '$1 == "rss_kb" {print $2}' <<<"$kiln_out")
start=$(date +%s.%N)
clush_rss=$(/usr/bin/time -f '%M' "$venv/bin/clush" -R exec -w "n[1-$n]" -f "$f" true 2>&1 >/dev/null | tail -1)
end=$(date +%s.%N)
clush_wall=$(echo "$end - $start" | bc -l)
echo "kiln.exec.wall $kiln_wall s"
echo "kiln.exec.peak_rss $((kiln_rss / 1024)) MB"
echo "clush.exec.wall $(printf %.3f "$clush_wall") s"
echo "clush.exec.peak_rss $((clush_rss / 1024)) MB"
echo "ratio kiln/clush $(printf %.3f "$(echo "$kiln_wall / $clush_wall" | bc -l)") (target <= 0.333)"
