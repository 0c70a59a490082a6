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


def test_summary_table_keeps_full_ids_and_classes_and_gives_reasons(tmp_path) -> None:
    from histo_net.batch.runner import BatchSummary
    from histo_net.batch.state import SlideState, write_state
    from histo_net.predict.run import print_summary
    from histo_net.predict.summary import SlideSummary

    long_id = "patient_0042_block_B3_section_07_HE_rescanned_2024"
    summ = SlideSummary("other_small_round_cell_tumour_morphology", "ok", {"a": 1.0}, 123)
    write_state(tmp_path, SlideState(long_id, "/x.svs", "done", summary=summ.to_json()))
    write_state(tmp_path, SlideState("broken", "/b.svs", "failed", error_type="slide_open",
                                     error="/b.svs: empty file (0 bytes)"))
    stream = io.StringIO()
    print_summary(BatchSummary(done=[long_id], failed=[("broken", "slide_open", "x")]), tmp_path,
                  stream)
    text = stream.getvalue()
    assert long_id in text and "other_small_round_cell_tumour_morphology" in text
    assert "[slide_open] /b.svs: empty file (0 bytes)" in text and "123" in text


def test_summary_table_names_non_call_outcomes_and_their_reasons(tmp_path) -> None:
    from histo_net.batch.runner import BatchSummary
    from histo_net.batch.state import SlideState, write_state
    from histo_net.predict.run import print_summary
    from histo_net.predict.summary import SlideSummary

    summ = SlideSummary("", "no_tumour_detected", {"a": 0.6, "b": 0.4}, 362, outcome="no_tumour_detected",
                        reasons=["tumour_share 0.194 < 0.239"])
    write_state(tmp_path, SlideState("s6", "/s6.svs", "done", summary=summ.to_json()))
    stream = io.StringIO()
    print_summary(BatchSummary(done=["s6"]), tmp_path, stream)
    text = stream.getvalue()
    assert "no_tumour_detected" in text and "tumour_share 0.194 < 0.239" in text
