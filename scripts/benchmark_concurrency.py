"""Two unsharded ``histo-net tile`` processes on one output folder vs one process.

Writes N synthetic pyramidal TIFFs, tiles them once with one process and once with two
processes started together on a fresh folder (no ``--shard``: the slide claims share the
work), and prints wall times, slides per process, whether any slide was computed twice,
and the load average. Usage: ``python scripts/benchmark_concurrency.py [--slides 12]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def write_slide(path: Path, height: int, width: int, seed: int) -> None:
    """A tiled JPEG pyramid (3 levels, 0.5 um/px) with pink/purple blobs on glass."""
    import tifffile

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((xx - width * 0.4) / (width * 0.25)) ** 2 + ((yy - height * 0.5) / (height * 0.35)) ** 2 < 1
    rgb = np.full((height, width, 3), 242, np.uint8)
    noise = rng.integers(0, 60, (height, width, 1), dtype=np.uint8)
    rgb[mask] = (np.array([220, 140, 185], np.uint8) - noise[mask]).clip(0, 255)
    res = 1e4 / 0.5
    with tifffile.TiffWriter(path) as tif:
        level = rgb
        for i in range(3):
            tif.write(np.ascontiguousarray(level), tile=(256, 256), compression="jpeg",
                      photometric="rgb", subfiletype=0 if i == 0 else 1,
                      resolution=(res / 2**i, res / 2**i), resolutionunit="CENTIMETER",
                      metadata=None)
            level = level[::2, ::2]


def tile_cmd(inputs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "histo_net", "tile", str(inputs), "--out", str(out),
            "--no-progress", "--no-qc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slides", type=int, default=12)
    parser.add_argument("--height", type=int, default=6144)
    parser.add_argument("--width", type=int, default=8192)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hn-concurrency-"))
    inputs = root / "in"
    inputs.mkdir()
    for i in range(args.slides):
        write_slide(inputs / f"slide_{i:02d}.tif", args.height, args.width, i)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    print(f"load average before: {os.getloadavg()}")
    start = time.monotonic()
    subprocess.run(tile_cmd(inputs, root / "one"), env=env, check=True, stdout=subprocess.DEVNULL)
    one_s = time.monotonic() - start
    start = time.monotonic()
    procs = [subprocess.Popen(tile_cmd(inputs, root / "two"), env=env, stdout=subprocess.DEVNULL)
             for _ in range(2)]
    codes = [p.wait() for p in procs]
    two_s = time.monotonic() - start
    states = [json.loads(p.read_text()) for p in (root / "two" / ".state").glob("*.json")]
    per_pid = Counter(s["pid"] for s in states)
    print(json.dumps({
        "slides": args.slides, "size_px": [args.width, args.height],
        "one_process_s": round(one_s, 1), "two_processes_s": round(two_s, 1),
        "speedup": round(one_s / two_s, 2), "exit_codes": codes,
        "slides_per_process": sorted(per_pid.values()),
        "all_done": all(s["status"] == "done" for s in states) and len(states) == args.slides,
        "load_average_after": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
