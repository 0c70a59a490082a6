"""``histo-net tile`` for many slides: the batch runner around :func:`ensure_tiles`.

Outputs ``OUT/tiles/<slide_id>.h5`` and ``OUT/tiles/<slide_id>_qc.png`` (written atomically
by the stage itself), with the same state files, failure isolation, ``--shard`` and failure
lines as ``predict``; ``OUT/tiling.csv`` lists every slide.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from histo_net.batch.runner import BatchSummary, OutputLayout, SlideTask, run_batch
from histo_net.batch.state import DONE, SlideState, read_states
from histo_net.config import TilingConfig
from histo_net.distributed import resolve_shard, select_shard
from histo_net.io_utils import json_safe, safe_child
from histo_net.wsi.inputs import SlideSpec, resolve_inputs
from histo_net.wsi.tiles_file import ensure_tiles

TILES_DIR = "tiles"
LAYOUT = OutputLayout(done_file=f"{TILES_DIR}/{{slide_id}}.h5", install=False)


@dataclass
class TilingSummary:
    """What tiling one slide produced (stored in its state file)."""

    n_tiles: int
    tissue_area_mm2: float | None
    slide_mpp: float
    mpp_source: str
    read_level: int
    line: str

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict for the state file."""
        return json_safe(asdict(self))


def tiling_csv_text(states: list[SlideState]) -> str:
    """tiling.csv: slide_id, path, status, n_tiles, tissue_area_mm2, slide_mpp, mpp_source, error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ("n_tiles", "tissue_area_mm2", "slide_mpp", "mpp_source")
    writer.writerow(["slide_id", "path", "status", *columns, "error"])
    for s in states:
        summ = s.summary if s.status == DONE else {}
        writer.writerow([s.slide_id, s.path, s.status, *[summ.get(c, "") for c in columns],
                         s.error or ""])
    return buffer.getvalue()


def run_tiling(inputs: Sequence[str | Path], *, out_dir: Path, cfg: TilingConfig,
               mpp_override: float | None = None, shard: str | None = None,
               overwrite: bool = False, write_qc: bool = True, progress: bool = True,
               slide_timeout_s: float | None = None) -> BatchSummary:
    """Tile every input slide (this process's shard) into ``out_dir/tiles``.

    ``slide_timeout_s``: wall-clock limit per slide on open + tiling + thumbnail (None: scaled
    by the slide's size, see :mod:`histo_net.wsi.watchdog`).
    """
    specs = resolve_inputs(list(inputs), mpp_override=mpp_override)
    index, count = resolve_shard(shard)
    specs = select_shard(specs, index, count, key=lambda s: s.slide_id)
    by_id: dict[str, SlideSpec] = {s.slide_id: s for s in specs}
    tiles_dir = safe_child(out_dir, TILES_DIR)
    tiles_dir.mkdir(parents=True, exist_ok=True)
    settings = cfg.model_dump(mode="json")
    tasks = [SlideTask(s.slide_id, s.path, s.label, {"tiling": settings, "mpp": s.mpp,
                                                      "stat": _stat(s.path)}) for s in specs]

    def process(task: SlideTask, _work_dir: Path) -> TilingSummary:
        outcome = ensure_tiles(by_id[task.slide_id], cfg, tiles_dir, overwrite=overwrite,
                               write_qc=write_qc, timeout_s=slide_timeout_s)
        line = outcome.summary_line(task.slide_id)
        print(line, file=sys.stdout, flush=True)
        t = outcome.tiles
        return TilingSummary(t.n_tiles, outcome.tissue_area_mm2, t.slide_mpp, t.mpp_source,
                             t.plan.level, line)

    summary = run_batch(tasks, process, out_dir=out_dir, overwrite=overwrite, progress=progress,
                        run_files=lambda states: {"tiling.csv": tiling_csv_text(states)},
                        layout=LAYOUT, command="tile")
    for state in read_states(out_dir):
        if state.slide_id in summary.skipped and state.summary.get("line"):
            print(f"{state.slide_id}: skipped, already tiled with the same settings "
                  f"({state.summary.get('n_tiles')} tiles); use --overwrite to redo", file=sys.stdout)
    return summary


def _stat(path: Path) -> dict[str, int] | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
