#!/usr/bin/env bash
# Real sweeps packed and alone, one torch thread a process, 3 epochs a run: grid_uci on dna (16 runs, 2 shapes) and
# three seeds of paper_dna.   MADE_DATA_DIR=... bash experiments/bench/packed_checks/run.sh <dir>
set -u
dir=$1
mkdir -p "$dir" && cd "$dir"
export OMP_NUM_THREADS=1 MADE_LOG_DIR=$dir/logs
common="data=dna logger=csv module.num_samples=0 trainer.max_epochs=3 hydra.sweep.subdir=\${hydra.job.num}"
for launcher in packed basic; do
  /usr/bin/time -f "grid_uci $launcher %e s" made-train -m experiment=grid_uci $common hydra/launcher=$launcher \
    "hydra.sweep.dir=$dir/g3_$launcher" > "grid_$launcher.log" 2>&1
  /usr/bin/time -f "paper_dna $launcher %e s" made-train -m experiment=paper_dna $common seed=0,1,2 \
    hydra/launcher=$launcher "hydra.sweep.dir=$dir/d3_$launcher" > "dna_$launcher.log" 2>&1
done
