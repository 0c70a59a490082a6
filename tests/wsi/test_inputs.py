"""histo_net.wsi.inputs: files, folders and manifest CSVs into unique slide specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from histo_net.errors import ConfigError
from histo_net.wsi.inputs import SlideSpec, list_slide_folder, read_manifest, resolve_inputs


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_listing_is_flat_and_filtered(tmp_path: Path) -> None:
    for name in ("b.svs", "a.TIF", "c.png", "notes.txt", "._b.svs", "..svs", "sub/deep.svs"):
        _touch(tmp_path / name)
    (tmp_path / "x.svs").mkdir()
    names = [p.name for p in list_slide_folder(tmp_path)]
    assert names == ["..svs", "a.TIF", "b.svs", "c.png", "x.svs"]
    specs = resolve_inputs([tmp_path])
    assert [s.slide_id for s in specs] == ["slide", "a", "b", "c", "x"]
    assert all(isinstance(s, SlideSpec) and s.mpp is None for s in specs)


def test_files_missing_paths_duplicates_and_mpp_override(tmp_path: Path) -> None:
    a = _touch(tmp_path / "one" / "slide.svs")
    b = _touch(tmp_path / "two" / "slide.svs")
    missing = tmp_path / "gone.svs"
    specs = resolve_inputs([a, str(b), missing, _touch(tmp_path / "we ird;name.svs")],
                           mpp_override=0.25)
    assert [s.slide_id for s in specs] == ["slide", "slide_2", "gone", "we_ird_name"]
    assert specs[2].path == missing
    assert {s.mpp for s in specs} == {0.25}


def test_manifest_columns_and_relative_paths(tmp_path: Path) -> None:
    _touch(tmp_path / "data" / "s1.svs")
    csv = tmp_path / "data" / "manifest.csv"
    csv.write_text(
        "\ufeffslide_id,patient_id,path,label,mpp,annotations,site\n"
        "S1,P1,s1.svs,NET,0.25,ann/s1.geojson,lung\n"
        f"../evil id,P2,{tmp_path / 'abs.svs'},,,,\n"
        "\n",
        encoding="utf-8",
    )
    specs = read_manifest(csv)
    assert len(specs) == 2
    s1, s2 = specs
    assert s1 == SlideSpec("S1", (tmp_path / "data" / "s1.svs").resolve(), "P1", "NET", 0.25,
                           (tmp_path / "data" / "ann" / "s1.geojson").resolve(), {"site": "lung"})
    assert s2.slide_id == "evil_id" and s2.path == (tmp_path / "abs.svs").resolve()
    assert (s2.label, s2.mpp, s2.annotations) == (None, None, None)
    # the CLI --mpp beats the manifest column
    assert {s.mpp for s in resolve_inputs([csv], mpp_override=0.5)} == {0.5}
    assert resolve_inputs([csv])[0].mpp == 0.25


def test_manifest_errors_list_all_bad_rows(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("slide_id,path,mpp\nA,a.svs,0.5\n,b.svs,\nC,,abc\nA,d.svs,100\n")
    with pytest.raises(ConfigError) as info:
        read_manifest(csv)
    message = str(info.value)
    assert "m.csv" in message and "\n" not in message
    for part in ("line 3: empty slide_id", "line 4: empty path", "bad mpp 'abc'",
                 "line 5: duplicate slide id 'A' (first on line 2)", "outside"):
        assert part in message
    assert "line 2:" not in message


@pytest.mark.parametrize(
    ("text", "match"),
    [("slide,file\nA,a.svs\n", "lacks column"), ("slide_id,path\n", "no slides")],
)
def test_manifest_structure_errors(tmp_path: Path, text: str, match: str) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text(text)
    with pytest.raises(ConfigError, match=match):
        resolve_inputs([csv])


def test_missing_manifest_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="manifest not found"):
        resolve_inputs([tmp_path / "nope.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no slides found"):
        resolve_inputs([tmp_path / "empty"])


def test_one_path_rule_ignores_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative manifest path means beside the CSV, even when the working folder has that file."""
    from histo_net.train.manifest import validate_manifest

    _touch(tmp_path / "cwd" / "s.svs")
    _touch(tmp_path / "data" / "s.svs")
    _touch(tmp_path / "data" / "t.svs")
    csv = tmp_path / "data" / "m.csv"
    csv.write_text("slide_id,patient_id,path,label\na,p1,s.svs,x\nb,p2,t.svs,y\n")
    monkeypatch.chdir(tmp_path / "cwd")
    beside = (tmp_path / "data" / "s.svs").resolve()
    assert read_manifest(csv)[0].path == beside
    assert validate_manifest(csv).slides[0].path == beside
    assert resolve_inputs([Path("../data/m.csv")])[0].path == beside


def test_same_file_twice_is_processed_once(tmp_path: Path) -> None:
    slide = _touch(tmp_path / "slides" / "s1.svs")
    csv = tmp_path / "m.csv"
    csv.write_text("slide_id,path,label\nS1,slides/s1.svs,NET\n")
    specs = resolve_inputs([tmp_path / "slides", csv, slide])
    assert [s.slide_id for s in specs] == ["s1"] and specs[0].path == slide.resolve()
    assert specs[0].label == "NET"  # the manifest's fields are kept


def test_dicom_instances_are_one_slide_per_folder(tmp_path: Path) -> None:
    from tests.slide_fixtures import he_like_image, write_dicom_wsi, write_test_slide

    rgb, _ = he_like_image(64, 64)
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    write_test_slide(cohort / "plain.tif", 256, 256)
    write_dicom_wsi(cohort / "caseA" / "l0.dcm", rgb, tile_px=64)
    write_dicom_wsi(cohort / "caseA" / "l1.dicom", rgb, tile_px=64, instance_uid="1.2.3.9")
    write_dicom_wsi(cohort / "own.dcm", rgb, tile_px=64)  # the folder's own instances
    (cohort / "notes").mkdir()
    specs = {s.slide_id: s.path for s in resolve_inputs([cohort])}
    assert specs == {"cohort": cohort, "caseA": cohort / "caseA", "plain": cohort / "plain.tif"}
    only = {s.slide_id: s.path for s in resolve_inputs([cohort / "caseA"])}
    assert only == {"caseA": cohort / "caseA"}  # a folder of instances given directly: one slide
