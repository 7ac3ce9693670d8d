#!/usr/bin/env bash
# Score the banks and the estimator runs of one dataset and K under every test strategy, one thread, into
# experiments/poe_estimators/<data>_k<K>/{is,ais} (the product's log Z by importance sampling, 10^4 samples,
# and by AIS, 1000 chains and 100 temperatures), or into the folder given fourth:
#   OMP_NUM_THREADS=1 MADE_DATA_DIR=../shared/data bash experiments/poe_estimators/score.sh <dir> dna 4 [<out>]
set -euo pipefail
dir=$1 data=$2 k=$3 out=${4:-experiments/poe_estimators/${2}_k$3}
made-compare "$dir/$data/k$k" --out "$out/is"
made-compare "$dir/$data/k$k" --out "$out/ais" --set poe.log_z_method=ais
