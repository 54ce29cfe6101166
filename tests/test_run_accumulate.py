"""Parallel.accumulate under a real 2-process gloo group: each rank adds its shard of every chunk, the shares are
summed (by the default state-dict sum, or the accumulator's own all_reduce) and every rank ends with the totals of
one pass over all items."""
from __future__ import annotations

import json
import os
import socket

import torch
import torch.multiprocessing as mp


class Tally:
    """Per class (item % 3): how many items and their sum (float64), an accumulator of the public protocol."""

    def __init__(self):
        self.n = torch.zeros(3, dtype=torch.float64)
        self.total = torch.zeros(3, dtype=torch.float64)

    def add(self, items):
        for i in items:
            self.n[i % 3] += 1
            self.total[i % 3] += i

    def merge(self, other):
        self.n += other.n
        self.total += other.total

    def state_dict(self):
        return {"meta": {"classes": 3}, "n": self.n.clone(), "total": self.total.clone()}

    def load_state_dict(self, sd):
        self.n.copy_(sd["n"])
        self.total.copy_(sd["total"])

    def empty(self):
        return Tally()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from esn_lens.run.parallel import Parallel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        par = Parallel.from_env()
        acc = Tally()
        for chunk in (list(range(0, 7)), list(range(7, 20))):
            par.accumulate(acc, chunk)
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump({"distributed": par.distributed, "n": acc.n.tolist(), "total": acc.total.tolist()}, f)
    finally:
        dist.destroy_process_group()


def test_accumulate_sums_the_ranks_shares_into_one_pass(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ref = Tally()
    ref.add(list(range(20)))
    for r in range(2):
        got = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert got["distributed"] and got["n"] == ref.n.tolist() and got["total"] == ref.total.tolist()
    assert ref.n.tolist() == [7.0, 7.0, 6.0] and ref.total.tolist() == [63.0, 70.0, 57.0]
