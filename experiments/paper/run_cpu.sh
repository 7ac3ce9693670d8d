#!/usr/bin/env bash
# The CPU runs behind experiments/paper/: the paper's two UCI columns for the six sets in
# ../shared/data (3 seeds each) and binarized MNIST at a CPU-feasible size. Two queues run
# side by side, one thread each, on a 2-core machine. Usage (from the project root):
#   MADE_DATA_DIR=../shared/data bash experiments/paper/run_cpu.sh [log dir]
# adult and ocr_letters mask sampling ran afterwards, from commit ecf0c66, with the two commands
# after the first wait; connect4 mask sampling in a later session, from commit 2f0c5c1, with the last
# command (there as three single-seed runs, two side by side). The last block ran in a third session,
# from commit 9510112 on an otherwise idle machine: the mask-sampling column as a bank of masks
# (masks=cycle) and runs with epoch caps far beyond where early stopping ends them.
# CPU limits (stated in experiments/paper/README.md): the max_epochs caps below, and mask-sampling
# runs validate on a mixture of 20 fresh masks (published: 300) to fit CPU time; they are still
# tested on the mixture of 1000 masks.
set -u
LOG=${1:-logs/paper}
TRAIN=(${PYTHON:-.venv/bin/python} -m made_exp.cli.train)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=offline
COMMON=(logger=csv data.minibatches_per_step=10)

sweep() {  # name, overrides...
    local name=$1; shift
    echo "$(date -u +%H:%M:%S) start $name"
    "${TRAIN[@]}" -m "${COMMON[@]}" "hydra.sweep.dir=$LOG/$name" "$@" > "$LOG/$name.log" 2>&1
    echo "$(date -u +%H:%M:%S) end $name (exit $?)"
}

mkdir -p "$LOG"
(
    sweep dna_fresh experiment=paper_dna seed=0,1,2 masks.val_num_masks=20 trainer.max_epochs=400
    sweep dna_single experiment=paper_dna seed=0,1,2 masks=single trainer.max_epochs=400
    sweep nips_fresh experiment=paper_nips seed=0,1,2 masks.val_num_masks=20 trainer.max_epochs=400
    sweep nips_single experiment=paper_nips seed=0,1,2 masks=single trainer.max_epochs=400
    sweep mushrooms_fresh experiment=paper_mushrooms seed=0,1,2 masks=fresh masks.val_num_masks=20 trainer.max_epochs=400
) > "$LOG/queue_a.txt" 2>&1 &
(
    sweep adult_single experiment=paper_adult seed=0,1,2 trainer.max_epochs=400
    sweep mushrooms_single experiment=paper_mushrooms seed=0,1,2 trainer.max_epochs=400
    sweep connect4_single experiment=paper_connect4 seed=0,1,2 trainer.max_epochs=100
    sweep ocr_letters_single experiment=paper_ocr_letters seed=0,1,2 trainer.max_epochs=100
    sweep mnist_cpu experiment=paper_binarized_mnist_cpu seed=0 trainer.max_epochs=20
) > "$LOG/queue_b.txt" 2>&1 &
wait
sweep adult_fresh experiment=paper_adult seed=0,1,2 masks=fresh masks.val_num_masks=20 trainer.max_epochs=200 &
sweep ocr_letters_fresh experiment=paper_ocr_letters seed=0,1,2 masks=fresh masks.val_num_masks=10 trainer.max_epochs=100 &
wait
sweep connect4_fresh experiment=paper_connect4 seed=0,1,2 masks=fresh masks.val_num_masks=20 trainer.max_epochs=400

# Third session (commit 9510112): two queues side by side. There, adult_single_adam ran seed 0 before
# seeds 1,2, and ocr_letters_cycle8's seeds 1 and 2 ran as single-seed sweeps beside each other.
(
    sweep mushrooms_cycle8_capped experiment=paper_mushrooms masks=cycle seed=0,1,2 trainer.max_epochs=400
    sweep connect4_cycle8_capped experiment=paper_connect4 masks=cycle seed=0,1,2 trainer.max_epochs=100
    sweep connect4_cycle8 experiment=paper_connect4 masks=cycle seed=0,1,2 trainer.max_epochs=1000
    sweep connect4_single_uncapped experiment=paper_connect4 seed=0,1,2 trainer.max_epochs=1000
    sweep ocr_letters_cycle8 experiment=paper_ocr_letters masks=cycle seed=0,1,2 trainer.max_epochs=1000
) > "$LOG/queue_c.txt" 2>&1 &
(
    sweep adult_single_adam experiment=paper_adult optimizer=adam seed=0,1,2 trainer.max_epochs=400
    sweep adult_cycle8_adam experiment=paper_adult optimizer=adam masks=cycle seed=0,1,2 trainer.max_epochs=400
    sweep adult_fresh_adam experiment=paper_adult optimizer=adam masks=fresh masks.val_num_masks=20 seed=0 \
        trainer.max_epochs=400
    sweep mushrooms_cycle8 experiment=paper_mushrooms masks=cycle seed=0,1,2 trainer.max_epochs=3000
    sweep mushrooms_cycle32 experiment=paper_mushrooms masks=cycle model.num_masks=32 seed=0,1,2 trainer.max_epochs=3000
    sweep adult_cycle32_adam experiment=paper_adult optimizer=adam masks=cycle model.num_masks=32 seed=0,1,2 \
        trainer.max_epochs=3000
    sweep adult_single_uncapped experiment=paper_adult seed=0,1,2 trainer.max_epochs=5000
    sweep mushrooms_fresh_uncapped experiment=paper_mushrooms masks=fresh masks.val_num_masks=20 seed=0,1,2 \
        trainer.max_epochs=5000
) > "$LOG/queue_d.txt" 2>&1 &
wait
# then, from commit 4f5e5f7 (same code), two seeds side by side (the third was stopped for time):
sweep connect4_cycle32 experiment=paper_connect4 masks=cycle model.num_masks=32 seed=0,1 trainer.max_epochs=3000
# and from commit 92ee06c (same training code):
sweep ocr_letters_single_uncapped experiment=paper_ocr_letters seed=0,1,2 trainer.max_epochs=1000
