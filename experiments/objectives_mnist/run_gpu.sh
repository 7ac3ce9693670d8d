#!/usr/bin/env bash
# The MNIST row of experiments/objectives_uci on one lent GPU, in one command that fits its time:
#   OUT=<dir> MADE_DATA_DIR=<data> bash experiments/objectives_mnist/run_gpu.sh <log dir>
# 1. Trains the objectives_uci recipe (MADE 784-500-784, Adam 1e-3, early stopping with patience 30) on binarized
#    MNIST, seeds 0-2, as three packs sharing the GPU, one process each (hydra/launcher=packed): Jensen banks
#    K = 1, 4, 16 (9 runs); fresh masks (3 runs); the mixture objective (3 runs). A pack still training after TRAIN_SECONDS gets a SIGTERM (its
#    runs keep their last complete epoch) and is finished by the same sweep with trainer.max_epochs set to the epoch
#    it reached, which tests every run on its best checkpoint: such runs are capped (results.json: stopped_by).
# 2. Scores them with made-compare on the GPU as score.sh scores the UCI runs, until DEADLINE seconds after the start:
#    the banks with the product's log Z by importance sampling (reports/is) and by AIS (reports/ais), then the
#    fresh-mask and mixture-objective runs on 1000 fresh masks (reports/fresh, reports/mixture_objective).
# 3. Writes $OUT/runs.tar.gz (the log dir without checkpoints), $OUT/checkpoints.tar.part-* (each best.ckpt reduced
#    to the weights, as many 15 MB parts as the device returns) and $OUT/run_gpu.log.
# DATA, TRAINER, TRAIN_SECONDS, DEADLINE and PYTHON change the defaults (a CPU rehearsal: DATA=dna TRAINER=default).
set -u
LOG=$1 OUT=${OUT:?set OUT}
DATA=${DATA:-binarized_mnist} TRAINER=${TRAINER:-gpu} PY=${PYTHON:-python3}
TRAIN_SECONDS=${TRAIN_SECONDS:-300} DEADLINE=${DEADLINE:-500}
HELPER=$(dirname "$0")/packed_runs.py
export WANDB_MODE=offline
mkdir -p "$LOG/logs" "$OUT"

note() { echo "$(date -u +%T) $*" | tee -a "$OUT/run_gpu.log"; }

train() {  # train NAME OVERRIDES...: one packed sweep into $LOG/NAME, finished at the epoch it reached if cut off
  local name=$1
  shift
  local command=("$PY" -m made_exp.cli.train -m hydra/launcher=packed experiment=objectives_uci "data=$DATA"
                 "trainer=$TRAINER" 'hydra.sweep.subdir=${hydra.job.num}' "hydra.sweep.dir=$LOG/$name" "$@")
  timeout -s TERM -k 60 "$TRAIN_SECONDS" "${command[@]}" >"$LOG/logs/train_$name.log" 2>&1
  local status=$?
  note "$name: made-train exit $status"
  if [ "$status" = 124 ]; then
    local reached
    reached=$("$PY" "$HELPER" epoch "$LOG/$name")
    note "$name: cut off after epoch $reached; finishing with trainer.max_epochs=$reached"
    "${command[@]}" "trainer.max_epochs=$reached" >>"$LOG/logs/train_$name.log" 2>&1
    note "$name: finished, exit $?"
  fi
}

score() {  # score NAME DIR ARGS...: made-compare of the runs under $LOG/DIR on the GPU, stopped at the deadline
  local name=$1 dir=$2
  shift 2
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 5 ]; then
    note "score $name: past the deadline, not started"
    return
  fi
  OMP_NUM_THREADS=2 timeout -s TERM -k 5 "$left" "$PY" -m made_exp.cli.compare "$LOG/$dir" --out "$LOG/reports/$name" \
    --accelerator "${TRAINER/default/cpu}" "$@" >"$LOG/logs/score_$name.log" 2>&1
  note "score $name: exit $?"
}

note "start: $DATA on $TRAINER, training ${TRAIN_SECONDS}s, scoring until ${DEADLINE}s"
train banks masks=cycle model.num_masks=1,4,16 seed=0,1,2 &
train fresh masks=fresh model.num_masks=1 seed=0,1,2 &
train mixture_objective masks=mixture_objective model.num_masks=1 seed=0,1,2 &
wait
# At once, one process each (the GPU idles while the samplers loop over the D dimensions): the banks under IS then
# AIS, and each fresh-mask run on 1000 fresh masks; made-compare over $LOG afterwards reads these evaluations.
(score is banks && score ais banks --set poe.log_z_method=ais) &
fresh=()
for strategy in mixture learned_mixture poe logit_average best_single; do
  fresh+=("$strategy.mask_source=fresh" "$strategy.num_masks=1000")
done
for run in "$LOG"/fresh/*/ "$LOG"/mixture_objective/*/; do
  run=${run%/}
  score "$(basename "$(dirname "$run")")_$(basename "$run")" "${run#"$LOG"/}" --set "${fresh[@]}" \
    poe.num_importance_samples=2000 &
done
wait
# The device returns at most 8 files of 16 MiB, 64 MiB in all: everything but the checkpoints in one archive first,
# then the best checkpoints (weights only, 6.3 MB each at 784-500-784) in at most 4 parts; what does not fit stays.
"$PY" "$HELPER" weights "$LOG"
tar -C "$LOG" --exclude=checkpoints -czf "$OUT/runs.tar.gz" .
(cd "$LOG" && find . -name best.ckpt | sort | tar -cf - -T -) | split -b 15M - "$LOG/checkpoints.tar.part-"
returned=0
for part in "$LOG"/checkpoints.tar.part-*; do
  if [ "$returned" -lt 4 ]; then mv "$part" "$OUT/" && returned=$((returned + 1)); else note "left behind: $(basename "$part")"; fi
done
note "done"
