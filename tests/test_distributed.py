"""Single-process answers of the distributed helpers and list sharding."""

from __future__ import annotations

import pytest

from histo_net import distributed as dist
from histo_net.errors import ConfigError


def test_single_process_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    import torch

    assert dist.init_distributed(torch.device("cpu")) is False
    assert (dist.get_rank(), dist.get_world_size(), dist.is_main_process()) == (0, 1, True)
    dist.barrier()
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    assert dist.sum_across_ranks([1.0, 2.5], torch.device("cpu")) == [1.0, 2.5]
    assert dist.broadcast_flag(True, torch.device("cpu")) is True


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_select_shard_partitions(world: int) -> None:
    items = list(range(11))
    shards = [dist.select_shard(items, r, world, key=str) for r in range(world)]
    assert sorted(x for s in shards for x in s) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ConfigError):
        dist.select_shard(items, world, world, key=str)
    assert dist.select_shard(list(reversed(items)), 0, world, key=str) == shards[0]  # order-free


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_cohort, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """torchrun --nproc-per-node 2: DDP stage 1 (gloo), sharded stage 2, rank-0 bundle."""
    import csv
    import math
    import os
    import subprocess
    import sys

    from histo_net.features.store import read_features_attrs
    from histo_net.models.bundle import load_bundle
    from tests.train.conftest import FAST_SETTINGS

    run = tmp_path / "RUN"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "histo_net", "train", "--manifest", str(tiny_cohort), "--out", str(run),
           *FAST_SETTINGS, "--workers", "0", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = load_bundle(run / "model.pt")
    assert bundle.build_mil() is not None and bundle.build_encoder() is not None
    with open(run / "logs" / "tile_cnn.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(math.isfinite(float(r["train_loss"])) for r in rows)
    ranks = {read_features_attrs(p)["written_by_rank"] for p in (run / "features").glob("*.h5")}
    assert ranks == {0, 1}
    assert len(list((run / "features").glob("*.h5"))) == 8
