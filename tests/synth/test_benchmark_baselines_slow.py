"""scripts/benchmark_baselines.py end to end on two small standard cohorts: the table has every
baseline, the JSON is complete, and colour statistics stay near chance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from histo_net.synth import generate_cohort

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_baselines.py"


@pytest.mark.slow
def test_baselines_script_end_to_end(tmp_path: Path) -> None:
    train = generate_cohort(tmp_path / "train", n_slides=12, seed=21, preset="tiny", workers=2,
                            preview=False, tumour_fraction=(0.3, 0.5))
    test = generate_cohort(tmp_path / "eval", n_slides=12, seed=22, preset="tiny", workers=2,
                           preview=False, tumour_fraction=(0.3, 0.5))
    out = tmp_path / "baselines.json"
    done = subprocess.run([sys.executable, str(SCRIPT), str(train), str(test), "--json", str(out),
                           "--tiles-per-slide", "24", "--bootstrap", "200"],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 6  # header, rule, (a)-(e) and (e) via subtypes
    for letter in "abcde":
        assert any(line.startswith(f"| ({letter})") for line in table), letter
    payload = json.loads(out.read_text())
    for name in ("rgb", "density", "histogram", "bandpass", "all"):
        for mode in ("cv", "cross"):
            score = payload["results"][name][mode]
            assert score["n_slides"] == 12 and score["n_tiles"] > 12 * 5
            assert 0.0 <= score["tile_auroc"] <= 1.0 and 0.0 <= score["slide_auroc"] <= 1.0
            lo, hi = score["slide_auroc_ci"]
            assert lo <= score["slide_auroc"] <= hi
            assert 0.0 <= score["subtype_slide_auroc"] <= 1.0
    colour = payload["results"]["rgb"]["cross"]
    assert colour["tile_auroc"] <= 0.7, f"colour statistics tell the label (tile AUROC {colour['tile_auroc']:.2f})"
