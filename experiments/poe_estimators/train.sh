#!/usr/bin/env bash
# The PoE objective's log Z estimators on one dataset at one K, each warm-started from the Jensen bank of the same
# seed (3 seeds), one thread, into <dir>/<data>/k<K>/{banks,seed<s>}:
#   OMP_NUM_THREADS=1 MADE_DATA_DIR=../shared/data bash experiments/poe_estimators/train.sh <dir> dna 4
# Further arguments are overrides for the estimator runs, e.g. optimizer.lr=1e-4 trainer.max_epochs=60. Banks
# already trained under <dir>/<data>/k<K>/banks (3 results.json) are reused. ESTIMATORS=importance,nce runs fewer.
set -euo pipefail
dir=$1 data=$2 k=$3
shift 3
out=$dir/$data/k$k
if [ "$(find "$out/banks" -name results.json 2>/dev/null | wc -l)" -lt 3 ]; then
  made-train -m experiment=objectives_uci "data=$data" masks=cycle "model.num_masks=$k" seed=0,1,2 \
    "hydra.sweep.dir=$out/banks"
fi
for seed in 0 1 2; do
  bank=$(ls -d "$out/banks/${seed}_"*)
  made-train -m experiment=objectives_uci "data=$data" masks=poe_objective "masks.log_z=${ESTIMATORS:-importance,smc,nce}" \
    "model.num_masks=$k" "seed=$seed" "init_from='$bank'" "hydra.sweep.dir=$out/seed$seed" "$@"
done
