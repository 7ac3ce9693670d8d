#!/usr/bin/env bash
# The paper-size binarized MNIST run behind experiments/paper/ (784-8000-8000-784, 32 masks, Adagrad
# 0.01, direct connection, orthogonal init: conf/experiment/paper_binarized_mnist.yaml) on one GPU.
# Usage (from the project root): MADE_DATA_DIR=../shared/data bash experiments/paper/run_gpu.sh [log dir]
# GPU limits (stated in experiments/paper/README.md): fp32 GEMMs in TF32 (matmul_precision=high) and a
# wall-clock cap on fitting (MAX_TIME, DD:HH:MM:SS) to fit a lent GPU's time; the best checkpoint
# by validation NLL is tested on the mixture of the 32 masks.
set -u
LOG=${1:-logs/paper}
mkdir -p "$LOG"
export WANDB_MODE=offline
${PYTHON:-.venv/bin/python} -m made_exp.cli.train -m experiment=paper_binarized_mnist trainer=gpu logger=csv seed=0 \
    matmul_precision=high "+trainer.max_time=\"${MAX_TIME:-00:00:17:00}\"" \
    '~callbacks.rich_progress_bar' +trainer.enable_progress_bar=false \
    "hydra.sweep.dir=$LOG/binarized_mnist_2x8000_gpu"
