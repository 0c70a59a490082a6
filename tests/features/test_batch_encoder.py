"""The per-batch encoder runner and the ``--workers auto`` rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from histo_net.device import auto_workers, available_cores, resolve_workers
from histo_net.errors import ConfigError
from histo_net.features.embed import prefers_channels_last
from histo_net.predict.pipeline import PredictConfig


class _PatchEncoder(nn.Module):
    """ViT-like: a patch embedding (kernel = stride) and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, kernel_size=16, stride=16)
        self.mix = nn.Linear(8, 8)


def test_channels_last_only_for_convolution_stacks() -> None:
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1, stride=2))
    assert prefers_channels_last(cnn)
    assert not prefers_channels_last(_PatchEncoder())


def test_workers_auto_resolves_to_a_valid_int() -> None:
    cores = available_cores()
    for device in (torch.device("cpu"), torch.device("cuda")):  # a device object needs no GPU
        n = resolve_workers("auto", device)
        assert isinstance(n, int) and 0 <= n <= max(cores, 1)
        assert resolve_workers(" AUTO ", device) == n
    assert auto_workers(torch.device("cuda"), cores=16) == 8
    assert auto_workers(torch.device("cuda"), cores=4) == 3
    assert auto_workers(torch.device("cuda"), cores=1) == 1
    assert auto_workers(torch.device("cpu"), cores=2) == 1
    assert auto_workers(torch.device("cpu"), cores=1) == 1
    assert auto_workers(torch.device("cpu"), cores=16) == 4
    assert resolve_workers(3, torch.device("cpu")) == 3
    assert resolve_workers("2", torch.device("cpu")) == 2
    assert resolve_workers(None, torch.device("cpu"), default=5) == 5


@pytest.mark.parametrize("bad", ["many", -1, "-2", True])
def test_workers_bad_values_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="workers"):
        resolve_workers(bad, torch.device("cpu"))  # type: ignore[arg-type]


def test_predict_config_accepts_auto() -> None:
    assert PredictConfig(workers="auto").workers == "auto"
    assert PredictConfig(workers=2).workers == 2
    with pytest.raises(ValueError):
        PredictConfig(workers="lots")


class _TinyCNN(nn.Module):
    """forward_features / forward_head like the package encoders, small enough to compile fast."""

    embed_dim, num_classes = 8, 3

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255.0).mean(dim=(2, 3))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)


@pytest.mark.slow
def test_compiled_forward_matches_eager() -> None:
    from histo_net.features.embed import BatchEncoder

    torch.manual_seed(0)
    model = _TinyCNN()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    eager = BatchEncoder(model, torch.device("cpu"))(x)
    compiled = BatchEncoder(model, torch.device("cpu"), compile=True)(x)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
