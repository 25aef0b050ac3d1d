#!/bin/bash
# `pcseg segment --votes 1 --threads 2`, whole command, against another pcseg checkout, alternating A/B, on the
# shipped airborne example and the two sparse 1 km2 tiles of ../shared/data/als; then sala-als with and without
# --bf16 on the sparse tiles. Pause other work first: this measures an idle machine.
#
#   git worktree add /tmp/pcseg-base <commit>
#   bash benchmarks/bench_segment_vs_baseline.sh /tmp/pcseg-base [PASSIVE]
#
# PASSIVE sets OMP_WAIT_POLICY=PASSIVE for every process (the training scripts' setting); else it is unset.
set -e
BASE=$(cd "${1:?usage: bench_segment_vs_baseline.sh BASELINE_CHECKOUT [PASSIVE]}" && pwd)
HERE=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(cd "$HERE/../shared/data/als" && pwd)
if [ "$2" = PASSIVE ]; then export OMP_WAIT_POLICY=PASSIVE; else unset OMP_WAIT_POLICY; fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
FILES="$HERE/examples/ign_lidarhd_77060_627760.laz $DATA/test_semis_2021_0382_6565_LA93_IGN69.laz $DATA/test_semis_2024_0751_6690_LA93_IGN69.laz"
run() {  # tree model file extra-flags
  (cd "$OUT" && PYTHONPATH="$1" python -m pcseg segment "$3" -o "$OUT/out.laz" --model "$2" --votes 1 --threads 2 \
    --json $4) | python3 -c "import json,sys; d=json.load(sys.stdin); print('$2', '$(basename "$3")', '$1' + ' $4', d['seconds'], 's', round(d['points_per_second']), 'points/s')"
}
echo "# OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in sala-als sala-als-tiny; do
  for f in $FILES; do
    for r in 1 2; do run "$BASE" $m "$f"; run "$HERE" $m "$f"; done
  done
done
for f in $FILES; do
  case "$f" in *example*|*ign_lidarhd*) continue;; esac
  for r in 1 2; do run "$HERE" sala-als "$f"; run "$HERE" sala-als "$f" --bf16; done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
