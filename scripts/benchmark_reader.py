#!/usr/bin/env python
"""Benchmark slide readers: raw OpenSlide vs ``Slide`` with each reader, on one slide.

For the tissue grid of 448 px level-0 regions (``tile_slide`` at 224 px and twice
the slide's mpp, row-major = raster order) it measures, in fresh processes pinned
to one core each:

* regions/s of raw ``openslide.OpenSlide.read_region`` (PIL RGBA),
* regions/s of ``Slide.read_region`` through OpenSlide (``HISTO_NET_READER=openslide``)
  and through the decode-once JPEG tile reader ("tifffile-jpeg") when it serves the slide,
* output tiles/s of the full ``Slide.read_tile`` path at 224 px / 0.5 um/px with each reader,

on one core (methods interleaved region by region, each with its own handles, so
load drift hits all alike; rates from wall and from thread CPU time) and on two processes (the grid split in blocks of 64 regions dealt
round-robin, as DataLoader workers get batches), plus source JPEG tiles decoded
and touched per output tile and the pixel difference between the two readers.
Print the load average with every run; time only on a quiet machine.

Usage: ``python scripts/benchmark_reader.py SLIDE [--max-regions 1500] [--json-out r.json]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

REGION_PX = 448
BLOCK = 64
METHODS = ("raw_openslide", "slide_openslide", "slide_tifffile_jpeg",
           "read_tile_openslide", "read_tile_tifffile_jpeg")


def _open(path: Path, reader: str) -> Any:
    """A ``Slide`` read through ``reader`` ("openslide" or "auto")."""
    from histo_net.wsi.handles import READER_ENV
    from histo_net.wsi.slide import open_slide

    old = os.environ.get(READER_ENV)
    os.environ[READER_ENV] = reader
    try:
        return open_slide(path, require_mpp=False)
    finally:
        if old is None:
            os.environ.pop(READER_ENV, None)
        else:
            os.environ[READER_ENV] = old


def _reader(name: str, path: Path) -> tuple[Callable[[tuple[int, int]], Any], Any] | None:
    """(read function, object with close()) of one method, or None when it does not apply."""
    import openslide

    size = (REGION_PX, REGION_PX)
    if name == "raw_openslide":
        handle = openslide.OpenSlide(str(path))
        return (lambda xy: handle.read_region(xy, 0, size)), handle
    slide = _open(path, "openslide" if name.endswith("_openslide") else "auto")
    if name.endswith("tifffile_jpeg") and slide.reader_name != "tifffile-jpeg":
        slide.close()
        return None
    if name.startswith("read_tile"):
        plan = slide.read_plan(0.5, 224)
        return (lambda xy: slide.read_tile(xy, plan)), slide
    return (lambda xy: slide.read_region(xy, 0, size)), slide


def _run(names: list[str], path: Path, coords: np.ndarray) -> dict[str, dict[str, float]]:
    """Read all ``coords`` with each method (fresh handles), calls interleaved coordinate by
    coordinate in rotating order, so load drift hits all methods alike: wall and thread-cpu
    seconds per method, plus the tile reader's counters."""
    readers = {name: _reader(name, path) for name in names}
    active = [name for name in names if readers[name] is not None]
    wall = dict.fromkeys(active, 0.0)
    cpu = dict.fromkeys(active, 0.0)
    for i, (x, y) in enumerate(coords):
        xy = (int(x), int(y))
        for k in range(len(active)):
            name = active[(i + k) % len(active)]
            fn = readers[name][0]  # type: ignore[index]
            t0, c0 = time.perf_counter(), time.thread_time()
            fn(xy)
            cpu[name] += time.thread_time() - c0
            wall[name] += time.perf_counter() - t0
    out: dict[str, dict[str, float]] = {}
    for name in active:
        handle = readers[name][1]  # type: ignore[index]
        row = {"wall": wall[name], "cpu": cpu[name], "n": float(len(coords))}
        tiles = getattr(handle, "_tiles", None)
        if tiles is not None:
            row.update(tiles_decoded=float(tiles.tiles_decoded), tiles_touched=float(tiles.tiles_touched))
        handle.close()
        out[name] = row
    return out


def _worker(core: int, path: str, grids: dict[str, np.ndarray], barrier: Any, queue: Any,
            repeat: int, interleave: bool) -> None:
    """Pin to ``core``, then run the methods ``repeat`` times (fresh handles each time):
    interleaved, or one method after another in step with the other workers."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core % os.cpu_count()})  # type: ignore[operator]
    import openslide  # noqa: F401  imports before the clock
    import simplejpeg  # noqa: F401

    import histo_net.wsi.slide  # noqa: F401

    groups = [[m for m in METHODS if not m.startswith("read_tile")],
              [m for m in METHODS if m.startswith("read_tile")]]
    if not interleave:
        groups = [[m] for group in groups for m in group]
    out: dict[str, dict[str, float]] = {}
    for names in groups:
        coords = grids["tiles" if names[0].startswith("read_tile") else "regions"]
        barrier.wait()
        for _ in range(repeat):
            for name, row in _run(names, Path(path), coords).items():
                acc = out.setdefault(name, dict.fromkeys(row, 0.0))
                for key, value in row.items():
                    acc[key] += value
    queue.put((core, out))


def _deal(coords: np.ndarray, n_proc: int) -> list[np.ndarray]:
    """Blocks of 64 consecutive coords dealt round-robin to ``n_proc`` workers."""
    blocks = [coords[i:i + BLOCK] for i in range(0, len(coords), BLOCK)]
    return [np.concatenate(blocks[k::n_proc]) if blocks[k::n_proc] else coords[:0]
            for k in range(n_proc)]


def _measure(path: Path, grids: dict[str, np.ndarray], n_proc: int, repeat: int
             ) -> dict[str, dict[str, float]]:
    """Items/s per method with ``n_proc`` pinned processes (blocks of 64 dealt round-robin)."""
    ctx = mp.get_context("fork")
    shares = {key: _deal(value, n_proc) for key, value in grids.items()}
    barrier, queue = ctx.Barrier(n_proc), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(k, str(path), {key: v[k] for key, v in shares.items()},
                                               barrier, queue, repeat, n_proc == 1))
             for k in range(n_proc)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    out: dict[str, dict[str, float]] = {}
    for name in METHODS:
        parts = [r[name] for _, r in results if name in r]
        if len(parts) < n_proc:
            continue
        n_items = sum(part["n"] for part in parts)
        wall = max(part["wall"] for part in parts)
        cpu = sum(part["cpu"] for part in parts)
        row = {"per_s": n_items / wall, "per_s_cpu": n_items / cpu * n_proc, "wall_s": wall,
               "items": n_items}
        if "tiles_decoded" in parts[0]:
            row["decoded_per_region"] = sum(p["tiles_decoded"] for p in parts) / n_items
            row["touched_per_region"] = sum(p["tiles_touched"] for p in parts) / n_items
        out[name] = row
    return out


def _pixel_diff(path: Path, coords: np.ndarray, n_max: int = 300) -> dict[str, float] | None:
    """Mean / max |difference| and fraction of identical values, tifffile-jpeg vs OpenSlide."""
    fast, ref = _open(path, "auto"), _open(path, "openslide")
    if fast.reader_name != "tifffile-jpeg":
        return None
    pick = coords[np.linspace(0, len(coords) - 1, min(n_max, len(coords))).astype(int)]
    total, n_values, n_equal, worst = 0.0, 0, 0, 0
    for level in range(ref.level_count):
        ds = ref.level_downsamples[level]
        size = (max(1, round(REGION_PX / ds)), max(1, round(REGION_PX / ds)))
        for x, y in pick[:: max(1, level * 4)]:
            a = ref.read_region((int(x), int(y)), level, size).astype(np.int16)
            b = fast.read_region((int(x), int(y)), level, size).astype(np.int16)
            diff = np.abs(a - b)
            total += float(diff.sum())
            n_values += diff.size
            n_equal += int((diff == 0).sum())
            worst = max(worst, int(diff.max()))
    fast.close()
    ref.close()
    return {"mean_abs_diff": total / n_values, "max_abs_diff": float(worst),
            "fraction_equal": n_equal / n_values, "values_compared": float(n_values)}


def _grid(path: Path, max_regions: int, whole: bool) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Row-major grids (first ``max_regions``) and slide facts.

    Returns 448 px level-0 regions (tissue grid of ``tile_slide`` at 224 px and twice
    the slide mpp, or the whole slide when ``whole``) and the default tiling grid
    (224 px at 0.5 um/px) for ``read_tile``.
    """
    from histo_net.config import TilingConfig
    from histo_net.wsi.tiling import tile_slide

    slide = _open(path, "auto")
    cfg = TilingConfig(target_mpp=min(20.0, 2 * slide.mpp), tile_size_px=REGION_PX // 2)
    result = tile_slide(slide, cfg)
    tiles = tile_slide(slide, TilingConfig()).coords
    regions = result.coords
    if whole:
        width, height = slide.dimensions
        ys, xs = np.mgrid[0:height:REGION_PX, 0:width:REGION_PX]
        regions = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
        tile_l0 = slide.read_plan(0.5, 224).patch_size_level0
        ys, xs = np.mgrid[0:height:tile_l0, 0:width:tile_l0]
        tiles = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    info = {"slide": str(path), "vendor": slide.vendor, "reader": slide.reader_name,
            "dimensions": list(slide.dimensions), "mpp": slide.mpp,
            "levels": [list(d) for d in slide.level_dimensions],
            "grid": "whole slide" if whole else "tissue",
            "tissue_regions": len(result.coords), "grid_regions": len(regions),
            "grid_tiles": len(tiles)}
    if slide._tiles is not None:
        lv = slide._tiles.levels[0]
        info["jpeg_tile_px"] = [lv.tile_w, lv.tile_h]
    slide.close()
    return regions[:max_regions], tiles[:max_regions], info


def _print(res: dict[str, Any]) -> None:
    info = res["slide"]
    print(f"slide {info['slide']}: {info['vendor']}, {info['dimensions'][0]}x{info['dimensions'][1]} px, "
          f"mpp {info['mpp']:.4g}, JPEG tiles {info.get('jpeg_tile_px')}, reader {info['reader']}")
    print(f"{res['n_regions']} regions of {REGION_PX} px level 0 ({info['grid']} grid, raster order), "
          f"{res['n_tiles']} read_tile tiles, x{res['repeat']} passes; load average before "
          f"{res['load_before']}, after {res['load_after']}")
    labels = {"raw_openslide": "raw OpenSlide read_region (regions/s)",
              "slide_openslide": "Slide.read_region, openslide (regions/s)",
              "slide_tifffile_jpeg": "Slide.read_region, tifffile-jpeg (regions/s)",
              "read_tile_openslide": "read_tile 224px@0.5, openslide (tiles/s)",
              "read_tile_tifffile_jpeg": "read_tile 224px@0.5, tifffile-jpeg (tiles/s)"}
    print(f"{'':<48}{'1 core':>10}{'2 procs':>10}{'1c cpu':>10}")
    for name, label in labels.items():
        if name not in res["one"]:
            continue
        one, two = res["one"][name], res["two"].get(name, {})
        print(f"{label:<48}{one['per_s']:>10.0f}{two.get('per_s', float('nan')):>10.0f}"
              f"{one['per_s_cpu']:>10.0f}")
    fast, raw = res["one"].get("slide_tifffile_jpeg"), res["one"]["raw_openslide"]
    if fast:
        two = res["two"]["slide_tifffile_jpeg"]["per_s"] / res["two"]["raw_openslide"]["per_s"]
        print(f"speed-up vs raw OpenSlide: 1 core {fast['per_s'] / raw['per_s']:.2f}x wall, "
              f"{fast['per_s_cpu'] / raw['per_s_cpu']:.2f}x cpu; 2 procs {two:.2f}x  target >= 5x")
        print(f"JPEG tiles decoded per region {fast['decoded_per_region']:.2f} (1 core), "
              f"{res['two']['slide_tifffile_jpeg']['decoded_per_region']:.2f} (2 procs); "
              f"touched {fast['touched_per_region']:.2f}")
    if res.get("pixels"):
        px = res["pixels"]
        print(f"pixels tifffile-jpeg vs OpenSlide, all levels: mean |diff| {px['mean_abs_diff']:.4f}, "
              f"max {px['max_abs_diff']:.0f}, identical {100 * px['fraction_equal']:.3f}% "
              f"of {px['values_compared']:.0f} values")


def main(argv: list[str] | None = None) -> int:
    """Measure one slide and print the table (and optionally JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide", type=Path)
    parser.add_argument("--max-regions", type=int, default=1500)
    parser.add_argument("--whole", action="store_true",
                        help="grid over the whole slide instead of the tissue tiles")
    parser.add_argument("--repeat", type=int, default=1,
                        help="passes over the grid per method, each with fresh handles")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    regions, tiles, info = _grid(args.slide, args.max_regions, args.whole)
    grids = {"regions": regions, "tiles": tiles}
    load_before = [round(v, 2) for v in os.getloadavg()]
    res: dict[str, Any] = {"slide": info, "n_regions": len(regions), "n_tiles": len(tiles),
                           "repeat": args.repeat, "load_before": load_before}
    res["one"] = _measure(args.slide, grids, 1, args.repeat)
    res["two"] = _measure(args.slide, grids, 2, args.repeat)
    res["pixels"] = _pixel_diff(args.slide, regions)
    res["load_after"] = [round(v, 2) for v in os.getloadavg()]
    res["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    _print(res)
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
