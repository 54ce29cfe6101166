"""Stats and neuron-set files carry a content checksum and are validated on load (issue #15, item 4).

Damage of any kind is one :class:`CorruptFileError` naming the file: a flipped data byte, tensors of another
dtype than written (uint8 counts), K > T, clip counts that cannot be, more units than the recorded budget.
Files of earlier versions (no checksum) still load when every other check passes.
"""
from __future__ import annotations

import json
import struct

import pytest
import torch

from esn_lens.errors import CorruptFileError
from esn_lens.io import CHECKSUM_KEY, FORMAT_KEY, load_tensors, save_tensors, tensor_checksum
from esn_lens.neurons import NeuronSet
from esn_lens.selectors import find_neurons
from esn_lens.stats import NeuronStats

EMOS = ("angry", "happy", "neutral", "sad")


def real_stats(seed: int = 0) -> NeuronStats:
    """Stats of random site values: 4 emotions, 3 layers, 50 units; T = 6 clips x 9 tokens per emotion."""
    g = torch.Generator().manual_seed(seed)
    s = NeuronStats(EMOS, n_layers=3, d_mlp=50)
    for _ in range(3):
        acts = torch.randn(3, 8, 9, 50, generator=g)
        s.add(acts, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), torch.ones(8, 9, dtype=torch.bool))
    return s


def data_offset(raw: bytes) -> int:
    """Byte offset of the safetensors data section (after the 8-byte length and the JSON header)."""
    return 8 + struct.unpack("<Q", raw[:8])[0]


def header_of(raw: bytes) -> dict:
    return json.loads(raw[8:data_offset(raw)])


def rewrite_without_checksum(path, tensors, kind, meta):
    """A file as earlier versions wrote it: same layout, no checksum in the header."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={FORMAT_KEY: kind, "meta": json.dumps(meta)})


# ---------------------------------------------------------------------- the checksum itself
def test_files_carry_a_checksum_of_their_content(tmp_path):
    s = real_stats()
    s.save(tmp_path / "s.safetensors")
    h = header_of((tmp_path / "s.safetensors").read_bytes())["__metadata__"]
    sd = s.state_dict()
    assert h[CHECKSUM_KEY] == tensor_checksum({k: v for k, v in sd.items() if k != "meta"}, h["meta"])
    assert len(h[CHECKSUM_KEY]) == 64
    back = NeuronStats.load(tmp_path / "s.safetensors")
    assert torch.equal(back.K, s.K) and torch.equal(back.T, s.T) and back.tokens.tolist() == [54.0] * 4


def test_neuron_file_with_one_flipped_data_byte_is_refused(tmp_path):
    ns = find_neurons(real_stats(), "mad", top_frac=0.1)  # budget 15 of 150 units per emotion
    assert ns.counts == {e: 15 for e in EMOS} and ns.meta["budget"] == 15
    good = tmp_path / "mad.safetensors"
    ns.save(good)
    raw = bytearray(good.read_bytes())
    off = data_offset(bytes(raw))
    i = off + int(torch.nonzero(~ns.masks.reshape(-1))[0])  # a False unit's byte
    raw[i] ^= 0x01  # False -> True: one more unit
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"flipped.safetensors: damaged esn_lens neuron_set file .*checksum") as ei:
        NeuronSet.load(bad)
    assert "\n" not in str(ei.value)
    assert NeuronSet.load(good) == ns


def test_stats_file_with_one_flipped_data_byte_is_refused(tmp_path):
    good = tmp_path / "s.safetensors"
    real_stats().save(good)
    raw = bytearray(good.read_bytes())
    raw[-3] ^= 0x40  # a byte of the last tensor's data
    bad = tmp_path / "flipped_stats.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="flipped_stats.safetensors: damaged esn_lens neuron_stats file"):
        NeuronStats.load(bad)


def test_edited_metadata_is_refused(tmp_path):
    ns = find_neurons(real_stats(), "mad", top_frac=0.1)
    good = tmp_path / "mad.safetensors"
    ns.save(good)
    raw = good.read_bytes()
    edited = raw.replace(b'\\"budget\\": 15', b'\\"budget\\": 99')  # same length: the header still parses
    assert edited != raw and len(edited) == len(raw)
    (tmp_path / "edited.safetensors").write_bytes(edited)
    with pytest.raises(CorruptFileError, match="edited.safetensors: .*checksum"):
        NeuronSet.load(tmp_path / "edited.safetensors")


# ---------------------------------------------------------------------- validation (with or without checksum)
def test_stats_file_with_uint8_tensors_is_refused(tmp_path):
    s = real_stats()
    sd = s.state_dict()
    meta = sd.pop("meta")
    T = torch.full((4,), 1086.0, dtype=torch.float64)
    assert int(T.to(torch.uint8)[0]) == 62  # what uint8 counts would silently become
    bad = tmp_path / "uint8.safetensors"
    save_tensors(bad, {**sd, "K": sd["K"].to(torch.uint8), "T": T.to(torch.uint8)}, "neuron_stats", meta)
    with pytest.raises(CorruptFileError, match=r"uint8.safetensors: damaged stats file \(tensors \{'K': 'torch.uint8', "
                                               r"'T': 'torch.uint8'\} are not torch.float64"):
        NeuronStats.load(bad)


def test_stats_file_with_k_above_t_is_refused(tmp_path):
    s = real_stats()
    sd = s.state_dict()
    meta = sd.pop("meta")
    K = sd["K"].clone()
    K[2, 1, 7] = 582.0  # T = 54: a firing rate of 10.78
    bad = tmp_path / "k_over_t.safetensors"
    save_tensors(bad, {**sd, "K": K}, "neuron_stats", meta)  # a consistent checksum: the values themselves are wrong
    with pytest.raises(CorruptFileError, match=r"k_over_t.safetensors: damaged stats file \(firing count K exceeds the "
                                               r"token count T: K=582 > T=54 for 'neutral' at layer 1, neuron 7"):
        NeuronStats.load(bad)


@pytest.mark.parametrize("case", ["fractional_K", "clips_without_tokens", "more_clips_than_tokens"])
def test_stats_file_with_impossible_counts_is_refused(tmp_path, case):
    sd = real_stats().state_dict()
    meta = sd.pop("meta")
    if case == "fractional_K":
        sd["K"][0, 0, 0] += 0.5
        expect = "tensor K holds counts but has non-integer entries"
    elif case == "clips_without_tokens":
        sd["n_clips"][1] = 0
        expect = r"54 tokens counted for 'happy' from n_clips=0 clips"
    else:
        sd["n_clips"][3] = 60
        expect = r"54 tokens counted for 'sad' from n_clips=60 clips"
    bad = tmp_path / f"{case}.safetensors"
    save_tensors(bad, sd, "neuron_stats", meta)
    with pytest.raises(CorruptFileError, match=rf"{case}.safetensors: damaged stats file \({expect}"):
        NeuronStats.load(bad)


def test_neuron_set_over_its_budget_is_refused_even_without_checksum(tmp_path):
    ns = find_neurons(real_stats(), "conact", top_frac=0.1)  # budget 15
    masks = ns.masks.clone()
    masks[0, 0, :] = True  # angry gets >= 50 units
    bad = tmp_path / "over_budget.safetensors"
    rewrite_without_checksum(bad, {"masks": masks}, "neuron_set", ns._file_meta())
    with pytest.raises(CorruptFileError, match=r"over_budget.safetensors: damaged neuron set file \(units per emotion "
                                               r"angry=\d+ exceed the recorded budget 15\)"):
        NeuronSet.load(bad)


def test_neuron_set_budget_not_matching_top_frac_is_refused(tmp_path):
    ns = find_neurons(real_stats(), "mad", top_frac=0.1)
    meta = ns._file_meta()
    meta["meta"]["budget"] = 40
    bad = tmp_path / "budget.safetensors"
    save_tensors(bad, {"masks": ns.masks}, "neuron_set", meta)
    with pytest.raises(CorruptFileError, match=r"budget.safetensors: .*budget 40 does not match top_frac 0.1 of 150 units"):
        NeuronSet.load(bad)


def test_per_layer_budget_is_checked_per_layer(tmp_path):
    ns = find_neurons(real_stats(), "mad", top_frac=0.1, per="layer")  # 5 per layer and emotion
    assert ns.meta["budget"] == 5 and ns.layer_counts().tolist() == [[5, 5, 5]] * 4
    p = tmp_path / "per_layer.safetensors"
    ns.save(p)
    assert NeuronSet.load(p) == ns
    masks = ns.masks.clone()
    masks[1, 2, :7] = True
    rewrite_without_checksum(p, {"masks": masks}, "neuron_set", ns._file_meta())
    with pytest.raises(CorruptFileError, match=r"units in one layer per emotion happy=\d+ exceed the recorded budget 5"):
        NeuronSet.load(p)


def test_mask_bytes_other_than_0_1_are_refused_without_checksum(tmp_path):
    ns = find_neurons(real_stats(), "mad", top_frac=0.1)
    p = tmp_path / "old.safetensors"
    rewrite_without_checksum(p, {"masks": ns.masks}, "neuron_set", ns._file_meta())
    raw = bytearray(p.read_bytes())
    raw[data_offset(bytes(raw)) + int(torch.nonzero(ns.masks.reshape(-1))[0])] = 0x07
    p.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"old.safetensors: damaged neuron set file \(mask bytes other than 0 and 1\)"):
        NeuronSet.load(p)


def test_old_files_without_checksum_load_when_otherwise_valid(tmp_path):
    s = real_stats()
    sd = s.state_dict()
    meta = sd.pop("meta")
    p = tmp_path / "old_stats.safetensors"
    rewrite_without_checksum(p, sd, "neuron_stats", meta)
    assert CHECKSUM_KEY not in header_of(p.read_bytes())["__metadata__"]
    back = NeuronStats.load(p)
    assert torch.equal(back.firing_rate, s.firing_rate)
    ns = find_neurons(s, "lape", top_frac=0.05)
    q = tmp_path / "old_set.safetensors"
    rewrite_without_checksum(q, {"masks": ns.masks}, "neuron_set", ns._file_meta())
    assert NeuronSet.load(q) == ns
    tensors, meta2 = load_tensors(q, "neuron_set")
    assert meta2["meta"]["budget"] == 8 and tensors["masks"].sum().item() == sum(ns.counts.values())
