#!/usr/bin/env bash
# GPU throughput check for histo-net (issue 13), in under 5 minutes.
#
#   bash scripts/gpu_check.sh            # on a GPU node: DEVICE=cuda (default)
#   DEVICE=cpu bash scripts/gpu_check.sh --quick   # dry run on a CPU machine (tiny slides)
#
# 1. finds a Python with histo-net's dependencies ($PYTHON, ./.venv, or python3), building
#    ./.venv (pip install -e .) only when none has them;
# 2. makes one synthetic benchmark slide with `histo-net synth` (--quick: a tiny one);
# 3. runs scripts/benchmark_inference.py on $DEVICE: ResNet-18 (bare forward beside plain
#    torchvision, end to end over COPIES copies of the slide, reader vs OpenSlide, per-slide
#    overhead on small slides), then the ViT-L preset `uni` with random weights (bare forward);
# 4. samples GPU utilisation with nvidia-smi in the background during each run (when present);
# 5. prints tiles/s, GPU busy %, and the share of the model's time spent waiting for readers.
# Outputs: $OUT_DIR (default ./gpu_check_out): *.json, *.log, gpu_util_*.csv.
set -euo pipefail

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DEVICE="${DEVICE:-cuda}"
OUT_DIR="${OUT_DIR:-$REPO/gpu_check_out}"
BATCH="${BATCH:-256}"
COPIES="${COPIES:-8}"
WORKERS="${WORKERS:-auto}"
PRESET="${PRESET:-benchmark}"
VIT="${VIT:-uni}"
START=$(date +%s)
if [ "$QUICK" = 1 ]; then
  BATCH=32; COPIES=2; PRESET=tiny
  BENCH_ARGS=(--quick)
else
  BENCH_ARGS=(--seconds 10)
fi
mkdir -p "$OUT_DIR"

has_deps() { "$1" -c "import torch, torchvision, timm, openslide, tifffile, histo_net" >/dev/null 2>&1; }
PY=""
for cand in "${PYTHON:-}" "$REPO/.venv/bin/python" "$(command -v python3 || true)"; do
  if [ -n "$cand" ] && [ -x "$cand" ] && PYTHONPATH="$REPO" has_deps "$cand"; then PY="$cand"; break; fi
done
if [ -z "$PY" ]; then
  echo "== no Python with histo-net's dependencies: building $REPO/.venv (pip install -e .)"
  python3 -m venv --system-site-packages "$REPO/.venv"
  "$REPO/.venv/bin/python" -m pip install --quiet -e "$REPO"
  PY="$REPO/.venv/bin/python"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
echo "== python: $PY ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'))"
echo "== device $DEVICE, batch $BATCH, workers $WORKERS, $(nproc) cores; $(uptime)"
if [ "$DEVICE" != "cpu" ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: DEVICE=$DEVICE but torch sees no CUDA device" >&2; exit 2
fi

SLIDE_DIR="$OUT_DIR/slide_$PRESET"
if ! ls "$SLIDE_DIR"/slides/*.svs >/dev/null 2>&1; then
  t0=$(date +%s)
  "$PY" -m histo_net synth --out "$SLIDE_DIR" --slides 1 --preset "$PRESET" --seed 7 --no-preview >/dev/null
  echo "== synthetic $PRESET slide in $(( $(date +%s) - t0 )) s"
fi
SLIDE="$(ls "$SLIDE_DIR"/slides/*.svs | head -n 1)"

SAMPLER_PID=""
start_sampler() {  # $1: csv file; GPU busy % and memory every 200 ms
  SAMPLER_PID=""
  if command -v nvidia-smi >/dev/null 2>&1 && [ "$DEVICE" != "cpu" ]; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > "$1" 2>/dev/null &
    SAMPLER_PID=$!
  fi
}
stop_sampler() {  # prints "mean% / max%" of the samples in $1 (or "n/a")
  if [ -n "$SAMPLER_PID" ]; then kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; fi
  SAMPLER_PID=""
  if [ -s "$1" ]; then
    awk -F', *' '{s+=$1; if ($1>m) m=$1; if ($1>=5) {b+=$1; nb++}; n++} END {
      if (n) printf "mean %.0f%%, max %.0f%%, mean while active %.0f%% (%d samples)", s/n, m, (nb? b/nb : 0), n;
      else printf "n/a" }' "$1"
  else
    printf "n/a (no nvidia-smi)"
  fi
}
trap '[ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null || true' EXIT

run_bench() {  # $1: name; rest: benchmark_inference.py arguments
  local name="$1"; shift
  start_sampler "$OUT_DIR/gpu_util_$name.csv"
  local rc=0
  "$PY" scripts/benchmark_inference.py --device "$DEVICE" --batch-size "$BATCH" --workers "$WORKERS" \
    "${BENCH_ARGS[@]}" --json-out "$OUT_DIR/$name.json" "$@" > "$OUT_DIR/$name.log" 2>&1 || rc=$?
  local util; util="$(stop_sampler "$OUT_DIR/gpu_util_$name.csv")"
  echo "== $name (exit $rc; GPU busy: $util)"
  grep -v '^generated' "$OUT_DIR/$name.log" | tail -n 12 | sed 's/^/   /'
  echo "$util" > "$OUT_DIR/gpu_util_$name.txt"
  return $rc
}

run_bench resnet18 --slide "$SLIDE" --copies "$COPIES"
run_bench "vit_$VIT" --encoder "$VIT" --bare-only --no-reader

"$PY" - "$OUT_DIR" "$VIT" <<'PYEOF'
import json, sys
from pathlib import Path
out, vit = Path(sys.argv[1]), sys.argv[2]
r = json.loads((out / "resnet18.json").read_text())
v = json.loads((out / f"vit_{vit}.json").read_text())
e = r["end_to_end"]
print("== summary")
print(f"   ResNet-18 bare forward {r['bare_forward_tiles_per_s']} tiles/s "
      f"(torchvision {r['torchvision_resnet18_tiles_per_s']}); end to end {e['tiles_per_s']} tiles/s "
      f"over {e['tiles']} tiles ({r['end_to_end_fraction_of_bare']:.0%} of bare; target >= 3000 tiles/s on 16 cores)")
print(f"   model waiting for the readers: {e['reader_wait_share']:.0%} of the embedding loop; "
      f"GPU busy {(out / 'gpu_util_resnet18.txt').read_text().strip()}")
if "reader" in r and "error" not in r["reader"]:
    rd = r["reader"]
    print(f"   reader {rd['reader']}: {rd['package_regions_per_s_1_core']} regions/s on 1 core "
          f"({rd['speedup_1_core']}x raw OpenSlide)")
sb = r["small_batch"]
print(f"   per-slide overhead {sb['per_slide_gap_s_median']} s median over {sb['slides']} small slides")
key = f"bare_forward_{vit}_tiles_per_s"
print(f"   {vit} (ViT-L, random weights) bare forward {v.get(key)} tiles/s; GPU busy "
      f"{(out / f'gpu_util_vit_{vit}.txt').read_text().strip()} (target >= 90%)")
print(f"   load: {r['load_before']} -> {v['load_after']}")
PYEOF
echo "== gpu_check.sh done in $(( $(date +%s) - START )) s; outputs in $OUT_DIR"
