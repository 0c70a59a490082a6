#!/usr/bin/env bash
# SLURM array job: predict a large cohort in N shards, one GPU each.
#   sbatch --array=0-15 scripts/slurm_predict_array.sh manifest.csv runs/model.pt out/
# Every task writes its own per-slide state files under OUT/.state/, so shards never
# write the same file; each task rebuilds OUT/predictions.csv and OUT/manifest.jsonl from
# all state files when it finishes, and a rerun of the same array resumes: finished
# slides (same input and model sha256) are skipped, failed ones are retried.
#SBATCH --job-name=histo-net-predict
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail
MANIFEST=${1:?manifest.csv}
MODEL=${2:?model.pt}
OUT=${3:?output folder}
: "${SLURM_ARRAY_TASK_ID:?run with sbatch --array}"
: "${SLURM_ARRAY_TASK_COUNT:=$((SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1))}"
source .venv/bin/activate
histo-net predict "$MANIFEST" --model "$MODEL" --out "$OUT" \
    --device cuda --workers "${SLURM_CPUS_PER_TASK}" \
    --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}"
