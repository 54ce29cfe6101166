"""Prefetching input building: identical statistics and predictions to the serial path, bounded and ordered."""
import threading

import pytest
import torch

from esn_lens import Condition, SEREvaluator, deactivate
from esn_lens.data import EmotionClip
from esn_lens.errors import InputError
from esn_lens.lens import Lens
from esn_lens.prefetch import check_workers, default_workers, prefetched
from esn_lens.testing import build_tiny, tiny_audio

EMOTIONS = ["angry", "happy", "neutral", "sad"]


def clips(n=10):
    return [EmotionClip(f"p{i}", EMOTIONS[i % 4], audio=tiny_audio(0.25 + 0.05 * i, freq=140 + 30 * i, seed=i),
                        sampling_rate=16000) for i in range(n)]


def test_prefetched_keeps_order_bounds_lookahead_and_raises_in_place():
    started = []
    gate = threading.Event()

    def build(i):
        started.append(i)
        if i == 0:
            gate.wait(5)
        return i * i

    it = prefetched(range(10), build, num_workers=2)
    first = []
    t = threading.Thread(target=lambda: first.append(next(it)))
    t.start()
    t.join(0.3)
    assert len(started) <= 3  # at most num_workers + 1 items ahead
    gate.set()
    t.join()
    assert first == [0] and list(it) == [i * i for i in range(1, 10)]

    def bad(i):
        if i == 3:
            raise InputError("clip 3 is broken")
        return i
    got = []
    with pytest.raises(InputError, match="clip 3"):
        for v in prefetched(range(6), bad, num_workers=2):
            got.append(v)
    assert got == [0, 1, 2]
    assert list(prefetched(range(4), lambda i: -i, num_workers=0)) == [0, -1, -2, -3]
    assert default_workers() >= 1 and check_workers(None) == default_workers()
    with pytest.raises(InputError, match="num_workers"):
        check_workers(-1)


def test_prefetched_statistics_and_predictions_equal_the_serial_path():
    model, proc = build_tiny("qwen2_audio", seed=3)
    lens = Lens(model, proc)
    cs = clips()
    serial = lens.collect_stats(cs, "Which emotion?", EMOTIONS, batch_size=3, progress=False, num_workers=0)
    ahead = lens.collect_stats(cs, "Which emotion?", EMOTIONS, batch_size=3, progress=False, num_workers=2)
    for name in ("K", "T", "sum", "sumsq", "n_clips"):
        assert torch.equal(getattr(serial, name), getattr(ahead, name)), name
    assert serial.T.sum() > 0
    units = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    units[0, :20] = True
    conds = [Condition("baseline"), Condition("mask", [deactivate(units)])]
    r0 = SEREvaluator(lens, EMOTIONS, batch_size=4, num_workers=0).run(cs, conds)
    r2 = SEREvaluator(lens, EMOTIONS, batch_size=4, num_workers=2).run(cs, conds)
    for k in r0:
        assert r0[k].predictions == r2[k].predictions


def test_default_is_serial_with_the_model_on_the_cpu_and_threads_on_a_gpu():
    assert default_workers("cpu") == 0 and default_workers(torch.device("cpu")) == 0
    assert check_workers(None, torch.device("cpu")) == 0 and check_workers(2, "cpu") == 2
    assert default_workers("cuda:1") == default_workers(torch.device("cuda", 0)) == default_workers() >= 1

    def where(i):
        return threading.current_thread().name

    main = threading.current_thread().name
    assert list(prefetched(range(3), where, device="cpu")) == [main] * 3
    assert all(n.startswith("esn-lens-prefetch") for n in prefetched(range(3), where, device="cuda:0"))
    # the library's loops pass the model's device: on a CPU model, batches are built in the calling thread
    model, proc = build_tiny("qwen2_audio", seed=3)
    lens = Lens(model, proc)
    built_in, batch_clips = [], lens.batch_clips

    def spy(*a, **kw):
        built_in.append(threading.current_thread().name)
        return batch_clips(*a, **kw)

    lens.batch_clips = spy
    lens.collect_stats(clips(4), "Which emotion?", EMOTIONS, batch_size=2, progress=False)
    assert built_in == [main, main]
    lens.collect_stats(clips(4), "Which emotion?", EMOTIONS, batch_size=2, progress=False, num_workers=1)
    assert built_in[2:] and all(n.startswith("esn-lens-prefetch") for n in built_in[2:])
