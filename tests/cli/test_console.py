"""Console output: the final progress bar drawn once, the demo's stage ticker."""

from __future__ import annotations

import io

from tqdm import tqdm

from histo_net.batch.runner import _advance
from histo_net.cli.demo import StageTicker, count_files


def test_final_progress_bar_is_drawn_once() -> None:
    stream = io.StringIO()
    bar = tqdm(total=3, file=stream, disable=False, mininterval=0, miniters=1)
    for _ in range(3):
        _advance(bar)
    bar.close()
    frames = stream.getvalue().split("\r")
    assert sum("3/3" in frame for frame in frames) == 1, frames


def test_demo_stage_ticker_prints_counts_and_elapsed(tmp_path) -> None:
    (tmp_path / "a.svs").write_bytes(b"x")
    stream = io.StringIO()
    with StageTicker("slides", count_files(tmp_path, "*.svs", 4), every_s=0.05, stream=stream):
        import time

        time.sleep(0.3)
    lines = [ln for ln in stream.getvalue().splitlines() if ln.strip()]
    assert lines and all("slides: 1/4 written (" in ln and ln.endswith(" s)") for ln in lines)
