"""Streaming batch prediction: one persistent reader pool and model thread for many slides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from histo_net.batch.state import read_state
from histo_net.features.embed import BatchEncoder, embed_slide
from histo_net.predict import pipeline as pipeline_module
from histo_net.predict.model import load_model, predict_from_features
from histo_net.predict.pipeline import PredictConfig, tile_for_predict
from histo_net.predict.run import run_predict
from histo_net.predict.stream import PersistentTileReader, SlideStream, slide_gaps_s
from histo_net.wsi.inputs import resolve_inputs
from tests.predict_fixtures import make_untrained_bundle
from tests.slide_fixtures import write_test_slide

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_untrained_bundle(tmp_path_factory.mktemp("bundle") / "model.pt")


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small H&E-like pyramidal TIFFs (different seeds and sizes) in one folder."""
    folder = tmp_path_factory.mktemp("stream_slides")
    for i, (h, w) in enumerate([(768, 1024), (640, 1024), (768, 896)]):
        write_test_slide(folder / f"slide_{i}.tiff", height=h, width=w, mpp=0.5, seed=10 + i)
    return folder


def _worker_pids(reader: PersistentTileReader) -> list[int]:
    iterator = getattr(reader._loader, "_iterator", None)
    return sorted(w.pid for w in getattr(iterator, "_workers", []))


def test_stream_matches_per_slide_path_with_one_worker_pool(bundle: Path, slides: Path) -> None:
    model = load_model(bundle, CPU)
    cfg = PredictConfig(batch_size=8, workers=1)
    specs = resolve_inputs([slides])
    assert len(specs) == 3
    tilings = {s.slide_id: tile_for_predict(s, model, cfg) for s in specs}
    runner = BatchEncoder(model.encoder, CPU)
    reader = PersistentTileReader(1, CPU)
    pids = []
    with SlideStream(specs, lambda s: tilings[s.slide_id], runner, reader,
                     batch_size=cfg.batch_size, lookahead=1) as stream:
        streamed = {}
        for spec in specs:
            streamed[spec.slide_id] = stream.take(spec.slide_id)
            pids.append(_worker_pids(reader))
        gaps = slide_gaps_s(stream.timings)
    assert len(pids[0]) == 1 and pids[0] == pids[1] == pids[2]  # the same worker process throughout
    assert len(gaps) == 2 and all(g >= 0 for g in gaps)
    for spec in specs:
        tiling = tilings[spec.slide_id]
        assert len(tiling.coords) > cfg.batch_size  # more than one batch per slide
        ref = embed_slide(model.encoder, spec.path, tiling.coords, tiling.plan, device=CPU,
                          batch_size=cfg.batch_size, workers=0)
        got = streamed[spec.slide_id].embedding
        np.testing.assert_allclose(got.features, ref.features, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.tile_probs, ref.tile_probs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.qc, ref.qc, rtol=1e-6, atol=1e-4)
        p_ref = predict_from_features(model, ref.features).probabilities
        p_got = predict_from_features(model, got.features).probabilities
        np.testing.assert_allclose(p_got, p_ref, rtol=0, atol=1e-6)


def test_failed_report_write_fails_that_slide_only_and_resumes(bundle: Path, slides: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    original = pipeline_module.write_slide_report

    def write_or_fail(slide_dir: Path, report):  # fault injection: a full disk for one slide
        if report.slide_id == "slide_1":
            raise OSError(28, "No space left on device")
        return original(slide_dir, report)

    monkeypatch.setattr(pipeline_module, "write_slide_report", write_or_fail)
    out = tmp_path / "out"
    cfg = PredictConfig(batch_size=32, workers=1)
    summary = run_predict([slides], model_path=bundle, out_dir=out, cfg=cfg, device_name="cpu",
                          progress=False)
    assert sorted(summary.done) == ["slide_0", "slide_2"]
    assert [f[0] for f in summary.failed] == ["slide_1"]
    state = read_state(out, "slide_1")
    assert state is not None and state.status == "failed" and state.error_type == "OSError"
    assert "No space left on device" in state.error and "\n" not in state.error
    assert "slide_1" in state.error  # names the file
    assert not (out / "slide_1").exists()
    for sid in ("slide_0", "slide_2"):
        assert (out / sid / "report.html").is_file()
        assert json.loads((out / sid / "report.json").read_text())["slide_id"] == sid

    monkeypatch.setattr(pipeline_module, "write_slide_report", original)
    again = run_predict([slides], model_path=bundle, out_dir=out, cfg=cfg, device_name="cpu",
                        progress=False)
    assert again.done == ["slide_1"] and sorted(again.skipped) == ["slide_0", "slide_2"]
    assert (out / "slide_1" / "report.html").is_file()


def test_out_of_order_takes_and_skipped_slides_still_get_their_own_results(bundle: Path, slides: Path) -> None:
    """The runner passing slides by (claimed elsewhere) and coming back to them later."""
    model = load_model(bundle, CPU)
    cfg = PredictConfig(batch_size=32, workers=0)
    specs = resolve_inputs([slides])
    tilings = {s.slide_id: tile_for_predict(s, model, cfg) for s in specs}
    runner = BatchEncoder(model.encoder, CPU)
    with SlideStream(specs, lambda s: tilings[s.slide_id], runner, PersistentTileReader(0, CPU),
                     batch_size=cfg.batch_size, skip=lambda sid: sid == "slide_1", lookahead=2) as stream:
        order = ["slide_2", "slide_0", "slide_1"]  # 0 passed by, 1 never computed ahead (skip)
        got = {sid: stream.take(sid) for sid in order}
    for spec in specs:
        tiling = tilings[spec.slide_id]
        assert got[spec.slide_id].spec.slide_id == spec.slide_id
        assert len(got[spec.slide_id].embedding.features) == len(tiling.coords)
        ref = embed_slide(model.encoder, spec.path, tiling.coords, tiling.plan, device=CPU,
                          batch_size=cfg.batch_size, workers=0)
        np.testing.assert_allclose(got[spec.slide_id].embedding.features, ref.features, rtol=0, atol=1e-5)
