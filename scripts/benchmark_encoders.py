#!/usr/bin/env python
"""Tiles/s of each pretrained encoder preset: forward_features + forward_head on random tiles.

Exactly what the features loop (histo_net.features.embed) runs per batch: raw uint8
tiles of the preset's tile size already on the device, channels_last, autocast via
histo_net.device.autocast (bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else off),
torch.inference_mode. Weights are random (the cost does not depend on them); nothing
is downloaded. Presets run one at a time and are freed in between (the giant ViTs
need ~4.5 GB each in fp32).

    python scripts/benchmark_encoders.py --json-out bench_encoders.json
    python scripts/benchmark_encoders.py --device cuda --min-seconds 20 --compile

Each line records the load average before and after, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from histo_net.device import amp_dtype, autocast, select_device
from histo_net.models.encoders import PretrainedEncoder
from histo_net.models.presets import get_preset, list_presets

CPU_BATCH = 4  # default batch on CPU: a giant ViT-g batch of 32 takes minutes on 2 cores


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_preset(name: str, device: torch.device, batch_size: int | None, min_seconds: float,
                 amp: bool, compile_model: bool) -> dict[str, Any]:
    """Build ``name`` with random weights and time batches until ``min_seconds`` have passed."""
    preset = get_preset(name)
    batch = batch_size or (preset.batch_size if device.type == "cuda" else CPU_BATCH)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    torch.manual_seed(0)
    encoder = PretrainedEncoder(preset, random_init=True).to(device).eval()
    encoder.to(memory_format=torch.channels_last)  # as embed_slide does
    build_s = time.perf_counter() - t0

    def step(x: torch.Tensor) -> torch.Tensor:
        return encoder.forward_head(encoder.forward_features(x))  # (B,C), C may be 0

    fwd = torch.compile(step) if compile_model else step
    tile = preset.tile_size_px
    x = torch.randint(0, 256, (batch, 3, tile, tile), dtype=torch.uint8, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, enabled=amp):
        t0 = time.perf_counter()
        fwd(x)  # warm-up (and compile)
        _sync(device)
        warmup_s = time.perf_counter() - t0
        n_tiles, t0 = 0, time.perf_counter()
        while n_tiles == 0 or time.perf_counter() - t0 < min_seconds:
            fwd(x)
            _sync(device)
            n_tiles += batch
        seconds = time.perf_counter() - t0
    peak_gib = (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None
    dtype = amp_dtype(device) if amp else None
    return {
        "preset": name, "tile_size_px": tile, "crop_px": preset.crop_px,
        "embed_dim": preset.embed_dim, "batch_size": batch, "tiles": n_tiles,
        "seconds": round(seconds, 2), "tiles_per_s": round(n_tiles / seconds, 3),
        "build_s": round(build_s, 1), "warmup_s": round(warmup_s, 1),
        "autocast": str(dtype).removeprefix("torch.") if dtype else "off (float32)",
        "compile": compile_model, "peak_gpu_gib": round(peak_gib, 2) if peak_gib else None,
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list_presets(), choices=list_presets())
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"tiles per forward (default: preset's on CUDA, {CPU_BATCH} on CPU)")
    parser.add_argument("--min-seconds", type=float, default=10.0,
                        help="time at least this long per preset (and at least one batch)")
    parser.add_argument("--no-amp", action="store_true", help="force float32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the batch step")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    device = select_device(args.device)
    header = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    print(json.dumps(header))
    print(f"{'preset':<26}{'batch':>6}{'tiles':>7}{'tiles/s':>10}{'autocast':>16}  load before/after")
    rows = []
    for name in args.presets:
        row = bench_preset(name, device, args.batch_size, args.min_seconds, not args.no_amp,
                           args.compile)
        rows.append(row)
        gc.collect()  # the encoder died with bench_preset's frame; give its memory back now
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        print(f"{name:<26}{row['batch_size']:>6}{row['tiles']:>7}{row['tiles_per_s']:>10}"
              f"{row['autocast']:>16}  {row['load_before']}/{row['load_after']}", flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps({**header, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
