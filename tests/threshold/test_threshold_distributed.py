"""Under torch.distributed every rank's histogram is summed, so all ranks share one ξ."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wsss_blocks.threshold import GMMThresholdSearcher

WORLD = 2


def _batch(rank: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 * step + rank)
    lo, hi = (0.2, 0.7) if rank == 0 else (0.3, 0.85)  # ranks see different data
    return torch.cat(
        (lo + 0.05 * torch.rand(400, generator=g), hi + 0.1 * torch.rand(200, generator=g))
    )


def _worker(rank: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        searcher = GMMThresholdSearcher(queue_size=3, ema_decay=0.5)
        xis = [searcher.update(_batch(rank, step)) for step in range(5)]
        torch.save({"xi": torch.stack(xis), "total": searcher.total}, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_threshold_ranks_agree_and_equal_single_process_on_all_data(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(str(tmp_path / "init"), out), nprocs=WORLD, join=True)
    results = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    assert torch.equal(results[0]["xi"], results[1]["xi"])
    single = GMMThresholdSearcher(queue_size=3, ema_decay=0.5)
    expected = [single.update(torch.cat([_batch(r, s) for r in range(WORLD)])) for s in range(5)]
    torch.testing.assert_close(results[0]["xi"], torch.stack(expected))
    assert torch.equal(results[0]["total"], single.total)
