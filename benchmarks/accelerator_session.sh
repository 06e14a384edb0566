#!/usr/bin/env bash
# One session on an accelerator machine (where its Python already has jax, flax, optax, orbax,
# pandas, matplotlib, tqdm): the full ML-100K study — seven backbones, orig and smooth, five
# seeds, the lambda_r sweep, the analyses and the report — then the speed benchmarks.
# Results go to $OUT (default ./accelerator_out): logs and one tarball of the run directories
# (checkpoints, resumable state and predictions left out, to fit the 16 MiB a file that comes back), refreshed while the study runs.
#   usage: bash benchmarks/accelerator_session.sh [STUDY_SECONDS] [BENCH_SECONDS]
set -u
OUT=${OUT:-accelerator_out}
STUDY_SECONDS=${1:-450}
BENCH_SECONDS=${2:-100}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
$PY -c "import jax, flax, optax, orbax.checkpoint; print(jax.__version__, flax.__version__, jax.devices())" 2>&1 | tee "$OUT/env.txt"
snapshot() { tar czf "$OUT/study.tgz.tmp" --exclude=checkpoints --exclude=state --exclude=predictions.npz runs_accel 2>/dev/null && mv "$OUT/study.tgz.tmp" "$OUT/study.tgz"; }
(while sleep 30; do snapshot; done) &
snapshotter=$!
timeout "$STUDY_SECONDS" $PY -m experiments.main --config dcnv2_ml100k --models all --analysis all \
  --runs-dir runs_accel --no-progress --set checkpoint_every=10 > "$OUT/study.log" 2>&1
echo "study exit $?" >> "$OUT/study.log"
kill $snapshotter; snapshot
{
  timeout "$BENCH_SECONDS" $PY -m benchmarks.train_speed --preset ml1m --models dcnv2,autoint,xdeepfm --repeats 2
  echo "train_speed exit $?"
  [ -f benchmarks/model_step.py ] && timeout 40 $PY -m benchmarks.model_step; echo "model_step exit $?"
} > "$OUT/benchmarks.log" 2>&1
