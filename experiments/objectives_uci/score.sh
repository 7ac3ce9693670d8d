#!/usr/bin/env bash
# Score every objectives_uci run of one dataset under every test strategy, one thread, into experiments/:
#   OMP_NUM_THREADS=1 bash experiments/objectives_uci/score.sh <dir> dna
# is/: the bank runs, the product's log Z by importance sampling (10^4 mixture samples); ais/: the same with
# log Z by AIS (1000 chains, 100 temperatures); fresh/: the fresh-mask runs on 1000 fresh masks drawn from each
# run's seeds.evaluation (the product's log Z by importance sampling, 2000 samples: AIS over 1000 masks is
# out of reach on this CPU).
set -euo pipefail
dir=$1 data=$2 out=experiments/objectives_uci/$2
made-compare "$dir/$data" --out "$out/is"
made-compare "$dir/$data" --out "$out/ais" --set poe.log_z_method=ais
sets=()
for strategy in mixture learned_mixture poe logit_average best_single; do
  sets+=("$strategy.mask_source=fresh" "$strategy.num_masks=1000")
done
made-compare "$dir/$data/fresh" --out "$out/fresh" --set "${sets[@]}" poe.num_importance_samples=2000
