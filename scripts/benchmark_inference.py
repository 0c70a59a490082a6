#!/usr/bin/env python
"""Inference throughput in one run: bare forward, plain ResNet-18, end to end, reader, per-slide overhead.

1. Bare forward: the package's per-batch work (:class:`histo_net.features.embed.BatchEncoder`:
   encoder features + head + on-device QC, inference_mode, channels_last for CNNs, bf16
   autocast where the device has it) on random uint8 tiles already on the device. Tiles/s.
2. Plain torchvision ResNet-18, same batch size, bf16 autocast + channels_last where supported
   (the reference the package's forward should match within 5%).
3. End to end: ``histo-net predict`` (streaming batch path) on one synthetic benchmark slide
   (generated here, or ``--slide``): tiles / wall time, the fraction end-to-end / bare, and
   the model thread's embedding loop alone.
4. Reader: ``scripts/benchmark_reader.py`` on the same slide: regions/s of the package reader
   against raw OpenSlide (1 core and 2 processes).
5. Per-slide fixed overhead on a batch of 8 small slides: seconds between one slide's last
   batch and the next slide's first (model-thread timestamps), median and max.

The load average (``uptime``) is printed before and after: time only on a quiet machine.
``--quick`` (tests, the CPU dry run of gpu_check.sh): tiny slides, short windows.
``--encoder PRESET`` (e.g. ``uni``) times that preset's bare forward with random weights
(end to end still uses the untrained ResNet-18 bundle unless ``--model`` is given).

    python scripts/benchmark_inference.py --json-out bench_inference.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from histo_net.predict.pipeline import PredictConfig
    from histo_net.predict.stream import SlideTiming

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# torch and histo_net are imported inside the functions: the tiling watchdog's fork-server
# children re-import this script's top level for every slide (python runs it as a path, not
# a module), which with torch at the top would add seconds per slide the CLI never pays.


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _sync(device: torch.device) -> None:
    import torch  # deferred: see the note at the top

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(step: Any, device: torch.device, batch_size: int, seconds: float) -> float:
    """Tiles/s of ``step()`` (one batch) over a ``seconds`` window after two warm-up calls."""
    for _ in range(2):
        step()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n == 0:
        step()
        n += batch_size
    _sync(device)
    return n / (time.perf_counter() - t0)


def bare_forward_tiles_per_s(encoder: torch.nn.Module, device: torch.device, batch_size: int,
                             tile_px: int, seconds: float, compile: bool = False) -> float:
    """Tiles/s of the pipeline's per-batch forward on random uint8 tiles already on ``device``."""
    import torch  # deferred: see the note at the top

    from histo_net.features.embed import BatchEncoder

    runner = BatchEncoder(encoder, device, compile=compile)
    x = torch.randint(0, 256, (batch_size, 3, tile_px, tile_px), dtype=torch.uint8, device=device)
    if runner.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.inference_mode():
            runner._forward(x)

    return _rate(step, device, batch_size, seconds)


def torchvision_resnet18_tiles_per_s(device: torch.device, batch_size: int, tile_px: int,
                                     seconds: float) -> float:
    """Plain torchvision ResNet-18 (random weights), float input, channels_last + autocast."""
    import torch  # deferred: see the note at the top
    from torchvision.models import resnet18

    from histo_net.device import autocast

    model = resnet18(weights=None).eval().to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, tile_px, tile_px, device=device).contiguous(
        memory_format=torch.channels_last)

    def step() -> None:
        with torch.inference_mode(), autocast(device):
            model(x)

    return _rate(step, device, batch_size, seconds)


def preset_encoder(name: str, device: torch.device) -> torch.nn.Module:
    """A registry preset (``uni``...) with random weights on ``device`` (no download)."""
    from histo_net.models.registry import create_encoder

    return create_encoder(name, random_init=True, num_classes=4).to(device).eval()


def reader_rates(slide: Path, max_regions: int) -> dict[str, Any]:
    """regions/s of the package reader and raw OpenSlide (scripts/benchmark_reader.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "reader.json"
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_reader.py"), str(slide),
                               "--max-regions", str(max_regions), "--json-out", str(out)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": tail}
        res = json.loads(out.read_text())
    rates: dict[str, Any] = {"reader": res["slide"].get("reader"), "regions": res["n_regions"]}
    for key, label in (("one", "1_core"), ("two", "2_procs")):
        raw = res[key]["raw_openslide"]["per_s"]
        ours = res[key].get("slide_tifffile_jpeg", res[key]["slide_openslide"])["per_s"]
        rates[f"raw_openslide_regions_per_s_{label}"] = round(raw, 1)
        rates[f"package_regions_per_s_{label}"] = round(ours, 1)
        rates[f"speedup_{label}"] = round(ours / raw, 2)
    return rates


def _synth(out: Path, n_slides: int, preset: str, seed: int) -> list[Path]:
    from histo_net.synth import generate_cohort

    generate_cohort(out, n_slides=n_slides, seed=seed, preset=preset, preview=False)
    return sorted((out / "slides").glob("*.svs"))


def end_to_end(slides: list[Path], bundle: Path, out: Path, cfg: PredictConfig, device_name: str
               ) -> tuple[float, int, list[SlideTiming]]:
    """(wall s, tiles, model-thread timings) of one ``predict`` run over ``slides``."""
    from histo_net.predict.run import run_predict  # deferred: see the note at the top

    timings: list[SlideTiming] = []
    t0 = time.perf_counter()
    summary = run_predict(slides, model_path=bundle, out_dir=out, cfg=cfg, device_name=device_name,
                          progress=False, on_timing=timings.append)
    wall = time.perf_counter() - t0
    if summary.failed:
        raise SystemExit(f"prediction failed: {summary.failed}")
    return wall, sum(t.tiles for t in timings), timings


def _device_name(device: torch.device) -> str:
    import torch  # deferred: see the note at the top

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"



def _finish(result: dict[str, Any], started: float, json_out: Path | None) -> int:
    """Load average after, total seconds, the printed table and the optional JSON file."""
    result["load_after"] = _load()
    result["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    _print(result)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
    return 0

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: untrained resnet18)")
    parser.add_argument("--encoder", default=None,
                        help="also time this registry preset's bare forward (random weights), e.g. uni")
    parser.add_argument("--slide", type=Path, default=None, help="slide (default: synthetic benchmark)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="auto", help="reader workers: a number or 'auto'")
    parser.add_argument("--workers-sweep", default=None,
                        help="comma-separated worker counts: end to end once per count (e.g. 0,1,2)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder forward")
    parser.add_argument("--seconds", type=float, default=15.0, help="bare-forward timing window")
    parser.add_argument("--max-regions", type=int, default=600, help="reader benchmark regions")
    parser.add_argument("--small-slides", type=int, default=8, help="slides of the overhead batch")
    parser.add_argument("--copies", type=int, default=1,
                        help="end to end over this many copies of the slide (a longer stream on a GPU)")
    parser.add_argument("--bare-only", action="store_true", help="only the two bare-forward figures")
    parser.add_argument("--no-reader", action="store_true", help="skip the reader benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny slides, short windows (tests)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch  # deferred: see the note at the top

    from histo_net.device import amp_dtype, resolve_workers, select_device
    from histo_net.models.untrained import save_untrained_bundle
    from histo_net.predict.model import load_model
    from histo_net.predict.pipeline import PredictConfig
    from histo_net.predict.stream import slide_gaps_s

    if args.quick:
        args.seconds, args.max_regions = min(args.seconds, 1.0), min(args.max_regions, 60)
        args.batch_size = min(args.batch_size, 32)
        args.small_slides = min(args.small_slides, 3)

    device = select_device(args.device)
    workers = resolve_workers(args.workers, device)
    load_before = _load()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; device "
          f"{_device_name(device)}; autocast {amp_dtype(device)}; torch {torch.__version__}")
    print(f"before: {load_before}")
    started = time.perf_counter()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": _device_name(device),
        "cores": os.cpu_count(), "torch": torch.__version__, "batch_size": args.batch_size,
        "workers": workers, "autocast": str(amp_dtype(device)), "compile": args.compile,
        "load_before": load_before}
    with tempfile.TemporaryDirectory(prefix="histo_net_bench_") as tmp_name:
        tmp = Path(tmp_name)
        tile_px = 64 if args.quick else 224
        mpp = 1.0 if args.quick else 0.5
        bundle = args.model or save_untrained_bundle(tmp / "model.pt", tile_size_px=tile_px, target_mpp=mpp)
        slide = args.slide
        if slide is None:
            t0 = time.perf_counter()
            slide = _synth(tmp / "bench", 1, "tiny" if args.quick else "benchmark", 7)[0]
            print(f"generated the benchmark slide in {time.perf_counter() - t0:.1f} s")
        model = load_model(bundle, device)
        tile_px = model.bundle.tile_size_px
        bare = bare_forward_tiles_per_s(model.encoder, device, args.batch_size, tile_px, args.seconds,
                                        args.compile)
        ref = torchvision_resnet18_tiles_per_s(device, args.batch_size, tile_px, args.seconds)
        result.update(tile_size_px=tile_px, bare_forward_tiles_per_s=round(bare, 1),
                      torchvision_resnet18_tiles_per_s=round(ref, 1),
                      bare_fraction_of_torchvision=round(bare / ref, 3))
        if args.encoder:
            enc = preset_encoder(args.encoder, device)
            enc_px = int(getattr(getattr(enc, "preset", None), "tile_size_px", 224) or 224)
            enc_bs = min(args.batch_size, 2) if args.quick else args.batch_size  # ViT-L on a CPU
            rate = bare_forward_tiles_per_s(enc, device, enc_bs, enc_px, args.seconds, args.compile)
            result[f"bare_forward_{args.encoder}_tiles_per_s"] = round(rate, 1)
            del enc

        if args.bare_only:
            return _finish(result, started, args.json_out)
        copies = [slide]
        for i in range(1, args.copies):  # the same slide under other names: a longer stream
            copies.append(tmp / "copies" / f"{slide.stem}_copy{i}{slide.suffix}")
            copies[-1].parent.mkdir(exist_ok=True)
            try:
                os.link(slide, copies[-1])
            except OSError:
                shutil.copyfile(slide, copies[-1])
        sweep = [int(v) for v in args.workers_sweep.split(",")] if args.workers_sweep else [workers]
        runs = {}
        for n in sweep:
            cfg = PredictConfig(batch_size=args.batch_size, workers=n, torch_compile=args.compile)
            wall, tiles, timings = end_to_end(copies, bundle, tmp / f"pred_w{n}", cfg, args.device)
            embed_s = sum((t.last_batch_at or 0) - (t.first_batch_at or 0) for t in timings)
            wait_s = sum(t.reader_wait_s for t in timings)
            runs[n] = {"tiles": tiles, "seconds": round(wall, 2), "tiles_per_s": round(tiles / wall, 1),
                       "embed_loop_tiles_per_s": round(tiles / embed_s, 1) if embed_s > 0 else None,
                       "reader_wait_share": round(wait_s / embed_s, 3) if embed_s > 0 else None}
        main_run = runs[workers] if workers in runs else runs[sweep[0]]
        result.update(end_to_end=main_run, end_to_end_by_workers=runs if len(runs) > 1 else None,
                      end_to_end_fraction_of_bare=round(main_run["tiles_per_s"] / bare, 3))

        if not args.no_reader:
            result["reader"] = reader_rates(slide, args.max_regions)

        small = _synth(tmp / "small", args.small_slides, "tiny", 11)
        cfg = PredictConfig(batch_size=args.batch_size, workers=workers, torch_compile=args.compile)
        wall, tiles, timings = end_to_end(small, bundle, tmp / "pred_small", cfg, args.device)
        gaps = slide_gaps_s(timings)
        own = slide_gaps_s(timings, exclude_backpressure=True)
        result["small_batch"] = {
            "slides": len(small), "tiles": tiles, "seconds": round(wall, 2),
            "per_slide_gap_s_median": round(statistics.median(gaps), 3) if gaps else None,
            "per_slide_gap_s_max": round(max(gaps), 3) if gaps else None,
            "per_slide_gap_s_median_without_backpressure": round(statistics.median(own), 3) if own else None,
            "backpressure_s_total": round(sum(t.backpressure_s for t in timings), 2),
            "per_slide_wall_s": round(wall / len(small), 2)}
    return _finish(result, started, args.json_out)


def _print(r: dict[str, Any]) -> None:
    bs = r["batch_size"]
    print(f"{'bare forward (package encoder)':<44}{r['bare_forward_tiles_per_s']:>10} tiles/s  (batch {bs})")
    print(f"{'torchvision ResNet-18, same batch':<44}{r['torchvision_resnet18_tiles_per_s']:>10} tiles/s  "
          f"(package = {r['bare_fraction_of_torchvision']:.0%}; target >= 95%)")
    for key, value in r.items():
        if key.startswith("bare_forward_") and key != "bare_forward_tiles_per_s":
            name = key[len("bare_forward_"):-len("_tiles_per_s")]
            print(f"{'bare forward, preset ' + name:<44}{value:>10} tiles/s")
    if "end_to_end" not in r:
        print(f"after: {r['load_after']}  ({r['benchmark_seconds']} s in all)")
        return
    e2e = r["end_to_end"]
    print(f"{'end-to-end predict':<44}{e2e['tiles_per_s']:>10} tiles/s  ({e2e['tiles']} tiles in "
          f"{e2e['seconds']} s, {r['end_to_end_fraction_of_bare']:.0%} of bare; target >= 80%; "
          f"workers {r['workers']}; embedding loop {e2e['embed_loop_tiles_per_s']} tiles/s, "
          f"model waiting for the readers {e2e['reader_wait_share']:.0%} of it)")
    for n, run in (r.get("end_to_end_by_workers") or {}).items():
        print(f"{'  workers ' + str(n):<44}{run['tiles_per_s']:>10} tiles/s")
    reader = r.get("reader")
    if reader and "error" not in reader:
        for label in ("1_core", "2_procs"):
            print(f"{'reader ' + str(reader['reader']) + ', ' + label.replace('_', ' '):<44}"
                  f"{reader['package_regions_per_s_' + label]:>10} regions/s  (raw OpenSlide "
                  f"{reader['raw_openslide_regions_per_s_' + label]}, {reader['speedup_' + label]}x; "
                  "target >= 5x)")
    elif reader:
        print(f"reader benchmark failed: {reader['error']}")
    sb = r["small_batch"]
    print(f"{'per-slide overhead, ' + str(sb['slides']) + ' small slides':<44}"
          f"{sb['per_slide_gap_s_median']!s:>10} s median, max {sb['per_slide_gap_s_max']} s "
          f"(last batch -> next first batch; target < 0.5 s; {sb['per_slide_wall_s']} s wall per slide)")
    print(f"{'  without waits for the report writer':<44}"
          f"{sb['per_slide_gap_s_median_without_backpressure']!s:>10} s median "
          f"(the model was held {sb['backpressure_s_total']} s in all: reports slower than the model)")
    print(f"after: {r['load_after']}  ({r['benchmark_seconds']} s in all)")


if __name__ == "__main__":
    sys.exit(main())
