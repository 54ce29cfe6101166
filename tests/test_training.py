"""The demo training scripts' shared loop pieces: seeded batches and the warm-up + cosine schedule."""
import math
import random

import pytest
import torch

from esn_lens.training import shuffled_batches, warmup_cosine


def test_shuffled_batches_cover_each_epoch_once_and_stop_mid_epoch():
    batches = list(shuffled_batches(10, 4, 7, seed=3))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2, 4]  # 3 batches an epoch, stops in the third epoch
    assert sorted(sum(batches[:3], [])) == list(range(10))
    assert sorted(sum(batches[3:6], [])) == list(range(10))
    assert batches[:3] != batches[3:6]  # a fresh shuffle each epoch
    rng = random.Random(3)  # the order is random.Random(seed).shuffle, epoch after epoch
    first = list(range(10))
    rng.shuffle(first)
    assert sum(batches[:3], []) == first
    assert batches == list(shuffled_batches(10, 4, 7, seed=3))
    assert batches != list(shuffled_batches(10, 4, 7, seed=4))


def test_shuffled_batches_refuse_empty_data():
    with pytest.raises(ValueError, match="n_items >= 1"):
        list(shuffled_batches(0, 4, 7, seed=0))


def test_warmup_cosine_rates():
    p = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = warmup_cosine(opt, warmup=4, total=10)
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.25 * 0.5 * (1 + math.cos(0)))
    assert lrs[3] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 10)))  # warm-up done at step 3
    assert lrs[5] == pytest.approx(0.5)
    assert lrs[10] == pytest.approx(0.0, abs=1e-12)
