#!/usr/bin/env bash
# One session on an accelerator machine (where its Python already has jax, flax, optax, orbax,
# pandas, matplotlib, tqdm): the full ML-100K study — seven backbones, orig and smooth, five
# seeds, the lambda_r sweep of the paper's Figure 4 models, the analyses and the study report —
# then the speed benchmarks on the quiet device.
# The seven backbones train as seven processes sharing the accelerator (compiles run on the host's
# cores in parallel), so the per-epoch timings of Table 3 are taken under that sharing.
# Results go to $OUT (default ./accelerator_out): env.txt, benchmarks.log and one tarball of the
# run directories and their logs (checkpoints, resumable state and predictions left out, to fit
# the 16 MiB a file that comes back), refreshed while the study runs.
# Seen on one H200: every backbone's study done within 245 s (--epochs 150); train_speed about
# 45 s per model (the defaults leave room for both inside one 10-minute call).
#   usage: [MODELS="xdeepfm"] [BENCH_MODELS=dcnv2,autoint,xdeepfm] \
#          bash benchmarks/accelerator_session.sh [STUDY_SECONDS] [BENCH_SECONDS] [extra main.py flags...]
set -u
OUT=${OUT:-accelerator_out}
STUDY_SECONDS=${1:-300}
BENCH_SECONDS=${2:-160}
shift $(( $# < 2 ? $# : 2 ))
RUNS=runs_accel
mkdir -p "$OUT" "$RUNS/logs"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
$PY -c "import jax, flax, optax, orbax.checkpoint; print(jax.__version__, flax.__version__, jax.devices())" 2>&1 | tee "$OUT/env.txt"
snapshot() { tar czf "$OUT/study.tgz.tmp" --exclude=checkpoints --exclude=state --exclude=predictions.npz "$RUNS" 2>/dev/null && mv "$OUT/study.tgz.tmp" "$OUT/study.tgz"; }
$PY -m lipctr.data ml100k > "$RUNS/logs/data.log" 2>&1  # fetch / cache once, before seven processes read it
(while sleep 30; do snapshot; done) &
snapshotter=$!
pids=()
for model in ${MODELS:-widedeep nfm xdeepfm autoint fignn dcnv2 eulernet}; do
  case $model in dcnv2|widedeep|xdeepfm) analysis=all ;; *) analysis=analyses ;; esac
  timeout "$STUDY_SECONDS" $PY -m experiments.main --config "${model}_ml100k" --analysis "$analysis" \
    --runs-dir "$RUNS" --no-progress --set checkpoint_every=10 "$@" > "$RUNS/logs/$model.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
finished=()
for run in "$RUNS"/*_ml100k/*/; do compgen -G "$run*/final.json" > /dev/null && finished+=("$run"); done
$PY -m experiments.report "${finished[@]}" --out "$RUNS/study_ml100k" > "$RUNS/logs/report.log" 2>&1
echo "report exit $?" >> "$RUNS/logs/report.log"
kill $snapshotter; snapshot
{
  timeout "$BENCH_SECONDS" $PY -m benchmarks.train_speed --preset ml1m --models "${BENCH_MODELS:-dcnv2,autoint,xdeepfm}" --repeats 2
  echo "train_speed exit $?"
} > "$OUT/benchmarks.log" 2>&1
