"""Local weights files: formats, wrappers, sha256, strict keys, unsafe pickles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from histo_net.errors import ModelBundleError
from histo_net.models.weights import check_keys, read_state_dict, state_sha256


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)).state_dict()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("suffix", [".safetensors", ".bin", ".pth", ".pt"])
def test_read_each_format_with_sha256(tmp_path: Path, suffix: str) -> None:
    from safetensors.torch import save_file

    state = _state()
    path = tmp_path / f"w{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    got, info = read_state_dict(path)
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.size_bytes == path.stat().st_size and info.path == path


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module", "nested", "compiled"])
def test_common_wrappers_unwrapped(tmp_path: Path, wrap: str) -> None:
    state = _state()
    payload: dict = {
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "args": "x"},
        "module": {f"module.{k}": v for k, v in state.items()},
        "nested": {"model": {"state_dict": {f"module.{k}": v for k, v in state.items()}}},
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},
    }[wrap]
    torch.save(payload, tmp_path / "w.pth")
    got, _ = read_state_dict(tmp_path / "w.pth")
    assert sorted(got) == sorted(state)


def test_prefix_only_stripped_when_every_key_has_it(tmp_path: Path) -> None:
    state = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    torch.save(state, tmp_path / "w.pt")
    assert sorted(read_state_dict(tmp_path / "w.pt")[0]) == ["b", "module.a"]


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickle_with_code_refused_without_running_it(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    torch.save({"weight": torch.zeros(2), "evil": _Evil()}, tmp_path / "evil.bin")
    with pytest.raises(ModelBundleError) as info:
        read_state_dict(tmp_path / "evil.bin")
    assert "refusing to load pickled objects" in _one_line(info) and "evil.bin" in str(info.value)
    assert "pickled code ran" not in capsys.readouterr().out


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "junk.bin").write_bytes(b"not a torch file at all")
    (tmp_path / "w.onnx").write_bytes(b"x")
    torch.save({"a": 1, "b": "x"}, tmp_path / "plain.pt")
    torch.save({}, tmp_path / "empty.pt")
    cases = {
        "junk.safetensors": "not a safetensors file", "junk.bin": "corrupt",
        "w.onnx": "unsupported weights file type '.onnx'", "missing.bin": "not found",
        "plain.pt": "not a state dict of tensors (key 'a' holds int)",
        "empty.pt": "not a state dict of tensors (empty)",
    }
    for name, text in cases.items():
        with pytest.raises(ModelBundleError) as info:
            read_state_dict(tmp_path / name)
        assert text in _one_line(info) and name in str(info.value)


def test_strict_keys_list_missing_unexpected_and_shapes() -> None:
    module = nn.Sequential(*[nn.Linear(2, 2) for _ in range(4)])
    state = dict(module.state_dict())
    for i in range(3):
        del state[f"{i}.weight"]
    state["head.weight"] = torch.zeros(1)
    state["3.bias"] = torch.zeros(5)
    with pytest.raises(ModelBundleError) as info:
        check_keys(module, state, path=Path("w.bin"), what="encoder preset 'x'")
    msg = _one_line(info)
    assert msg.startswith("w.bin: weights do not fit encoder preset 'x': ")
    assert "3 missing (0.weight, 1.weight, 2.weight)" in msg
    assert "1 unexpected (head.weight)" in msg
    assert "1 wrong shape (3.bias: file (5,) vs model (2,))" in msg
    check_keys(module, module.state_dict(), path=Path("w.bin"), what="x")  # exact fit passes


def test_state_sha256_tracks_values() -> None:
    a, b = _state(0), _state(1)
    assert state_sha256(a) == state_sha256({k: v.clone() for k, v in a.items()})
    assert state_sha256(a) != state_sha256(b)


def test_expected_sha256_refuses_another_file(tmp_path: Path) -> None:
    torch.save(_state(0), tmp_path / "a.bin")
    torch.save(_state(1), tmp_path / "b.bin")
    sha_a = read_state_dict(tmp_path / "a.bin")[1].sha256
    assert read_state_dict(tmp_path / "a.bin", expected_sha256=sha_a.upper())[1].sha256 == sha_a
    with pytest.raises(ModelBundleError) as info:
        read_state_dict(tmp_path / "b.bin", expected_sha256=sha_a)
    assert "b.bin: sha256" in _one_line(info) and f"expected {sha_a[:16]}" in str(info.value)
