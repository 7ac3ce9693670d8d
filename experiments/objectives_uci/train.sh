#!/usr/bin/env bash
# Train the objectives_uci runs of one dataset, one thread, into $1/<dataset>/{k1,banks,fresh}:
#   OMP_NUM_THREADS=1 bash experiments/objectives_uci/train.sh <dir> dna
set -euo pipefail
dir=$1 data=$2
made-train -m experiment=objectives_uci "data=$data" masks=cycle model.num_masks=1 seed=0,1,2 \
  "hydra.sweep.dir=$dir/$data/k1"
made-train -m experiment=objectives_uci "data=$data" "hydra.sweep.dir=$dir/$data/banks"
made-train -m experiment=objectives_uci "data=$data" masks=fresh,mixture_objective model.num_masks=1 seed=0,1,2 \
  trainer.max_epochs=3000 "hydra.sweep.dir=$dir/$data/fresh"
