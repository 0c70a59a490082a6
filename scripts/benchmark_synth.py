"""Benchmark the synthetic slide generator: seconds and peak RSS for one slide.

Usage: python scripts/benchmark_synth.py --size 40000 [--out /tmp/bench] [--keep]
       python scripts/benchmark_synth.py --preset small --size 0 --tumour-fraction 0.3   # a small slide
Runs the generation in a child process and reports its peak resident memory
(``ru_maxrss`` of the child), so the number is the generator's alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _generate(out: str, size_px: int, seed: int, fmt: str, preset: str, subtype: str | None,
              tumour_fraction: float | None) -> None:
    from dataclasses import replace

    from histo_net.synth.cohort import generate_slide, plan_cohort

    job = plan_cohort(1, seed, preset, fmt=fmt)[0]
    if size_px > 0:
        job = replace(job, width=size_px, height=size_px)
    if subtype:
        job = replace(job, subtype=subtype)
    if tumour_fraction is not None:
        job = replace(job, tumour_fraction=(tumour_fraction, tumour_fraction))
    row = generate_slide(job, Path(out))
    print(json.dumps({k: row[k] for k in ("subtype", "width", "height", "tumour_fraction")}))


def main() -> int:
    """Generate one square slide and print a JSON line with seconds and peak RSS (GiB)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=40_000, help="slide width = height, level-0 px (0: preset size)")
    ap.add_argument("--preset", default="benchmark", choices=("tiny", "small", "benchmark"))
    ap.add_argument("--subtype", default=None, help="force this subtype (default: the plan's first)")
    ap.add_argument("--tumour-fraction", type=float, default=None, help="force this tumour fraction")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", default="svs", choices=("svs", "tiff"))
    ap.add_argument("--out", default=None, help="output folder (default: a temp folder, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the output slide")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="histo_net_bench_"))
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    proc = ctx.Process(target=_generate, args=(str(out), args.size, args.seed, args.format, args.preset,
                                               args.subtype, args.tumour_fraction))
    proc.start()
    proc.join()
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    files = list((out / "slides").glob("*"))
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    print(json.dumps({"size_px": args.size, "seconds": round(seconds, 1),
                      "peak_rss_gib": round(peak_kib / 2**20, 3), "file_mib": round(size_mb, 1),
                      "exitcode": proc.exitcode}))
    if not args.keep and args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if proc.exitcode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
