"""Device selection and the single autocast code path."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from histo_net.device import amp_dtype, autocast, make_grad_scaler, seed_everything, select_device
from histo_net.errors import ConfigError


def test_select_device_cpu_and_auto() -> None:
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_requested_but_absent_is_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="not available"):
        select_device(name)


def test_unknown_device_name() -> None:
    with pytest.raises(ConfigError, match="expected auto, cpu"):
        select_device("tpu")


def test_autocast_dtype_matches_amp_dtype() -> None:
    dev = torch.device("cpu")
    dtype = amp_dtype(dev)
    assert dtype in (None, torch.bfloat16)
    a = torch.randn(4, 4)
    with autocast(dev, enabled=True):
        out = a @ a
    assert out.dtype == (dtype or torch.float32)
    with autocast(dev, enabled=False):
        assert (a @ a).dtype == torch.float32
    assert not make_grad_scaler(dev).is_enabled()  # no fp16 on CPU


def test_seed_everything_reproducible() -> None:
    seed_everything(7)
    a = (torch.rand(3), np.random.rand(), random.random())
    seed_everything(7)
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
