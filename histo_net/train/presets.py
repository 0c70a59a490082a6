"""Named override sets for ``histo-net train --preset`` (merged under ``--set`` overrides).

- ``demo``: fast enough that synth small + train + predict finishes in < 10 minutes
  on 2 CPU cores (training about 4 minutes).
- ``benchmark``: the documented benchmark settings (the defaults, spelled out).
"""

from __future__ import annotations

from typing import Any

from histo_net.errors import ConfigError

PRESETS = ("demo", "benchmark")


def preset_overrides(name: str) -> dict[str, Any]:
    """A fresh nested dict of config overrides for preset ``name``; ConfigError when unknown."""
    if name == "demo":
        # 24 small slides: synth + this training + predicting the held-out slides take about
        # 6-8 minutes on 2 CPU cores. Fewer training slides or epochs generalise poorly across
        # the per-slide stain jitter and the three "other" sub-patterns.
        return {
            "tiling": {"target_mpp": 0.5, "tile_size_px": 128},
            "tile_cnn": {"epochs": 4, "max_tiles_per_slide": 192, "val_max_tiles_per_slide": 64,
                         "patience": 2},
            "mil": {"epochs": 60, "patience": 15},
            "evaluation": {"bootstrap_samples": 500},
        }
    if name == "benchmark":
        return {
            "tiling": {"target_mpp": 0.5, "tile_size_px": 128},
            "tile_cnn": {"epochs": 6, "max_tiles_per_slide": 256},
        }
    raise ConfigError(f"--preset {name}: unknown preset (choices: {', '.join(PRESETS)})")
