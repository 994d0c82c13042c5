"""The collective helpers of wsss_blocks.training on 2 CPU processes (gloo), and their
single-process behaviour (no-ops); shards of training and evaluation data."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from wsss_blocks.data import WeakStrongViews
from wsss_blocks.training import (
    DistInfo,
    any_rank,
    average_buffers_,
    distributed,
    eval_batches,
    gather_objects,
    is_distributed,
    parameter_digest,
    rank_and_world,
    sum_over_ranks_,
    unwrap,
    wrap_ddp,
)
from wsss_blocks.training.data import TrainBatches


class _InMemory(torch.utils.data.Dataset):
    """Sample i has every pixel equal to i: a batch says which samples it holds."""

    def __init__(self, n: int = 11) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def tensors(self):
        images = torch.arange(self.n, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 8, 8)
        masks = torch.arange(self.n).view(-1, 1, 1).expand(-1, 8, 8)
        return images.contiguous(), masks.contiguous(), torch.ones(self.n, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    with distributed(torch.device("cpu")) as (info, device):
        out = {"info": info, "device": str(device), "rank_world": rank_and_world()}
        out["any_false"] = any_rank(False)
        out["any_one"] = any_rank(rank == 1)
        out["sum"] = sum_over_ranks_(torch.tensor([rank + 1, 10 * (rank + 1)])).tolist()
        out["gathered"] = gather_objects({"r": rank})
        bn = torch.nn.BatchNorm1d(3)
        bn.running_mean.fill_(float(rank))  # ranks saw different batches
        average_buffers_(bn)
        out["bn_mean"] = bn.running_mean.tolist()
        torch.manual_seed(rank)  # different initialisations: DDP starts from rank 0's
        net = torch.nn.Linear(4, 2)
        ddp = wrap_ddp(net, device)
        out["digest_after_wrap"] = parameter_digest(unwrap(ddp))
        ddp(torch.full((2, 4), float(rank))).sum().backward()  # gradients averaged
        out["grad"] = net.weight.grad.clone()
        shard = [x[:, 0, 0, 0] * 255 for x, _, _ in eval_batches(_InMemory(), 2, None, 0,
                                                                 "cpu", *rank_and_world())]
        out["eval_shard"] = torch.cat(shard).round().long().tolist()
        views = WeakStrongViews(8, scale=(1.0, 1.0))
        batches = TrainBatches(_InMemory(), 64, views, device, rank=rank, world_size=2)
        out["train_shard"] = sorted(set(batches.next().masks[:, 0, 0].tolist()))
    out["after"] = is_distributed()
    results[rank] = out


@pytest.fixture(scope="module")
def two_ranks():
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
    return [results[0], results[1]]


def test_ranks_know_their_place_and_leave_the_group(two_ranks):
    for r, out in enumerate(two_ranks):
        assert out["info"] == DistInfo(r, 2, r, 2)
        assert out["info"].is_main == (r == 0)
        assert out["device"] == "cpu" and out["rank_world"] == (r, 2)
        assert out["after"] is False  # the group is destroyed when the block ends


def test_collectives_agree_on_every_rank(two_ranks):
    for out in two_ranks:
        assert out["any_false"] is False and out["any_one"] is True
        assert out["sum"] == [3, 30]
        assert out["gathered"] == [{"r": 0}, {"r": 1}]
        assert out["bn_mean"] == [0.5, 0.5, 0.5]


def test_ddp_starts_from_rank_0_and_averages_gradients(two_ranks):
    a, b = two_ranks
    assert a["digest_after_wrap"] == b["digest_after_wrap"]
    torch.testing.assert_close(a["grad"], b["grad"], rtol=0, atol=0)
    # d/dW of sum(W x + b) is x per output row: ranks fed x = 0 and x = 1, mean 0.5 * 2 rows
    torch.testing.assert_close(a["grad"], torch.full((2, 4), 1.0))


def test_shards_cover_the_data_once(two_ranks):
    a, b = two_ranks
    assert sorted(a["eval_shard"] + b["eval_shard"]) == list(range(11))
    assert a["eval_shard"] == list(range(0, 11, 2))
    assert set(a["train_shard"]) <= set(range(0, 11, 2))
    assert set(b["train_shard"]) <= set(range(1, 11, 2))


def test_single_process_helpers_are_no_ops():
    assert not is_distributed() and rank_and_world() == (0, 1)
    assert any_rank(True) is True and any_rank(False) is False
    t = torch.tensor([1, 2])
    assert sum_over_ranks_(t) is t and t.tolist() == [1, 2]
    assert gather_objects(7) == [7]
    net = torch.nn.Linear(2, 2)
    assert wrap_ddp(net, torch.device("cpu")) is net and unwrap(net) is net
    with distributed(torch.device("cpu")) as (info, device):
        assert info == DistInfo() and device == torch.device("cpu")


def test_bad_environment_and_shards_are_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        with distributed(torch.device("cpu")):
            pass
    with pytest.raises(ValueError, match="rank"):
        next(eval_batches(_InMemory(), 2, rank=2, world_size=2))
    with pytest.raises(ValueError, match="rank"):
        TrainBatches(_InMemory(), 2, WeakStrongViews(8), torch.device("cpu"), rank=-1)


def test_digest_tells_states_apart():
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert parameter_digest(a) == parameter_digest(b)
    with torch.no_grad():
        b.bias[0] = torch.nextafter(b.bias[0], torch.tensor(1.0))  # one ulp
    assert parameter_digest(a) != parameter_digest(b)
