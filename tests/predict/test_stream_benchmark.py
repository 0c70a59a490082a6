"""scripts/benchmark_inference.py --quick runs end to end and prints every figure (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_inference_quick_prints_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_inference.py"), "--quick",
                           "--device", "cpu", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for label in ("bare forward (package encoder)", "torchvision ResNet-18", "end-to-end predict",
                  "raw OpenSlide", "per-slide overhead", "load average"):
        assert label in proc.stdout, proc.stdout
    res = json.loads(out.read_text())
    assert res["bare_forward_tiles_per_s"] > 0 and res["torchvision_resnet18_tiles_per_s"] > 0
    assert res["end_to_end"]["tiles"] > 0 and 0 < res["end_to_end_fraction_of_bare"]
    assert res["reader"]["raw_openslide_regions_per_s_1_core"] > 0
    assert res["small_batch"]["slides"] == 3 and res["small_batch"]["per_slide_gap_s_median"] >= 0
