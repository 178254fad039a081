#!/usr/bin/env bash
# Runs one cargo-fuzz target of kiln for a while (the long form of the
# corpus replay test `cargo test -p kiln --lib fuzzing`). See docs/fuzzing.md.
#   scripts/fuzz.sh TARGET [SECONDS]      TARGET: admin_frame | import_file | nodeset
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Works on the stable toolchain
# through RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags), without a
# sanitizer by default; SANITIZER=address for ASan (slower). One process: the
# machine's cores are shared. The corpus grows in fuzz/corpus-run/TARGET
# (not committed), seeded from the committed fuzz/corpus/TARGET; crashes land
# in fuzz/artifacts/TARGET. The last lines libFuzzer prints give the number
# of executions (`stat::number_of_executed_units`) and the time.
set -euo pipefail
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
seconds=${2:-600}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
case $target in
  admin_frame) max_len=4096 ;;
  import_file) max_len=4096 ;;
  nodeset) max_len=256 ;;
  *) echo "unknown target $target: admin_frame, import_file or nodeset" >&2; exit 2 ;;
esac
mkdir -p "corpus-run/$target"
export RUSTC_BOOTSTRAP=1
exec cargo fuzz run -s "${SANITIZER:-none}" "$target" "corpus-run/$target" "corpus/$target" -- \
  -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1
