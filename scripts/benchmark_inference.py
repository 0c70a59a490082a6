#!/usr/bin/env python
"""Inference throughput: bare model forward vs end-to-end `predict`, in one run.

1. Bare forward: random uint8 tiles already on the device, encoder features + head
   (exactly what the pipeline runs per batch), bf16 autocast where supported,
   channels_last. Tiles/s.
2. End to end: `histo-net predict` on a synthetic benchmark slide (generated here, or
   --slide): tissue detection, tiling, tile reads in DataLoader workers, encoder, QC,
   MIL, calibration, heatmaps and report. Tiles/s = tiles / wall time, and the
   embedding loop alone.

Target (issue 5): end-to-end >= 80% of bare forward. Uses an untrained bundle unless
--model is given (weights do not change the cost).

    python scripts/benchmark_inference.py --json-out bench_inference.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from histo_net.device import autocast, select_device
from histo_net.models.untrained import save_untrained_bundle
from histo_net.predict.model import load_model
from histo_net.predict.pipeline import PredictConfig
from histo_net.predict.run import run_predict


def bare_forward_tiles_per_s(model, device: torch.device, batch_size: int, tile_px: int,
                             seconds: float) -> float:
    """Tiles/s of encoder forward_features + forward_head on random uint8 device tensors."""
    x = torch.randint(0, 256, (batch_size, 3, tile_px, tile_px), dtype=torch.uint8, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    encoder = model.encoder
    with torch.inference_mode(), autocast(device):
        for _ in range(2):  # warm-up
            encoder.forward_head(encoder.forward_features(x))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            encoder.forward_head(encoder.forward_features(x))
            n += batch_size
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: untrained resnet18)")
    parser.add_argument("--slide", type=Path, default=None, help="slide (default: synthetic benchmark)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=20.0, help="bare-forward timing window")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    device = select_device(args.device)
    with tempfile.TemporaryDirectory(prefix="histo_net_bench_") as tmp_name:
        tmp = Path(tmp_name)
        bundle_path = args.model or save_untrained_bundle(tmp / "model.pt")
        slide = args.slide
        if slide is None:
            from histo_net.synth import generate_cohort

            t0 = time.perf_counter()
            generate_cohort(tmp / "cohort", n_slides=1, seed=7, preset="benchmark")
            print(f"generated benchmark slide in {time.perf_counter() - t0:.1f} s")
            slide = next((tmp / "cohort").rglob("*.svs"))
        model = load_model(bundle_path, device)
        tile_px = model.bundle.tile_size_px
        bare = bare_forward_tiles_per_s(model, device, args.batch_size, tile_px, args.seconds)

        cfg = PredictConfig(batch_size=args.batch_size, workers=args.workers)
        t0 = time.perf_counter()
        summary = run_predict([slide], model_path=bundle_path, out_dir=tmp / "pred", cfg=cfg,
                              device_name=args.device, progress=False)
        wall = time.perf_counter() - t0
        if summary.failed:
            raise SystemExit(f"prediction failed: {summary.failed}")
        report = json.loads(next((tmp / "pred").glob("*/report.json")).read_text())
        n_tiles = int(report["qc"]["tile_count"])

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch": torch.__version__, "batch_size": args.batch_size, "tile_size_px": tile_px,
        "bare_forward_tiles_per_s": round(bare, 1), "tiles": n_tiles,
        "end_to_end_seconds": round(wall, 2), "end_to_end_tiles_per_s": round(n_tiles / wall, 1),
        "end_to_end_fraction_of_bare": round(n_tiles / wall / bare, 3),
    }
    print(f"{'bare forward':<28}{result['bare_forward_tiles_per_s']:>10} tiles/s")
    print(f"{'end-to-end predict':<28}{result['end_to_end_tiles_per_s']:>10} tiles/s "
          f"({n_tiles} tiles in {wall:.1f} s, {result['end_to_end_fraction_of_bare']:.0%} of bare)")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
