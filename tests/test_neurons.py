"""NeuronSet: construction, indexing, histograms, set algebra, overlap and files."""
from __future__ import annotations

import torch
import pytest
from safetensors.torch import save_file

from esn_lens.errors import CorruptFileError, IncompatibleError, InputError
from esn_lens.neurons import NeuronSet
from esn_lens.stats import NeuronStats

EMOS = ("angry", "happy", "sad")


def known_a() -> NeuronSet:
    return NeuronSet.from_indices(
        EMOS, {"angry": [(0, 1), (0, 2), (2, 7)], "happy": [(1, 0)], "sad": []}, n_layers=3, d_mlp=8,
        selector="mad", top_frac=0.01, model_fingerprint="fp-a", meta={"dataset": "iemocap"},
    )


def known_b() -> NeuronSet:
    return NeuronSet.from_indices(
        EMOS, {"angry": [(0, 2), (2, 7), (1, 1)], "happy": [(2, 0)]}, n_layers=3, d_mlp=8,
        selector="mad", top_frac=0.01, model_fingerprint="fp-a",
    )


# ---------------------------------------------------------------------- construction and access
def test_from_indices_masks_indices_counts():
    a = known_a()
    assert a.masks.shape == (3, 3, 8) and a.masks.dtype == torch.bool
    assert a.n_layers == 3 and a.d_mlp == 8 and len(a) == 3 and list(a) == list(EMOS)
    assert a["angry"].nonzero().tolist() == [[0, 1], [0, 2], [2, 7]]
    assert a.indices("angry").tolist() == [[0, 1], [0, 2], [2, 7]]
    assert a.indices("angry").dtype == torch.int64
    assert a.indices("sad").shape == (0, 2)
    assert a.counts == {"angry": 3, "happy": 1, "sad": 0}
    assert a.layer_counts().tolist() == [[2, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert a.layer_counts().dtype == torch.int64
    assert int(a.masks.sum()) == 4 and "angry" in a


def test_indices_round_trip_through_from_indices():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 4, 10, generator=g) < 0.3
    ns = NeuronSet(masks, EMOS)
    again = NeuronSet.from_indices(EMOS, {e: ns.indices(e) for e in EMOS}, 4, 10)
    assert torch.equal(again.masks, masks)
    assert sum(again.counts.values()) == int(masks.sum())


def test_unknown_emotion_keyerror_lists_known():
    with pytest.raises(KeyError, match=r"unknown emotion 'calm'; this NeuronSet has \['angry', 'happy', 'sad'\]"):
        known_a()["calm"]
    with pytest.raises(KeyError, match="calm"):
        known_a().indices("calm")


@pytest.mark.parametrize(
    "pair, where",
    [((3, 0), "layer=3, neuron=0"), ((0, 8), "layer=0, neuron=8"), ((-1, 2), "layer=-1, neuron=2")],
)
def test_from_indices_refuses_out_of_range(pair, where):
    with pytest.raises(InputError, match=rf"index \({where}\) for emotion 'happy' is out of range: "
                                         r"layer must be in 0\.\.2, neuron in 0\.\.7"):
        NeuronSet.from_indices(EMOS, {"happy": [(1, 1), pair]}, n_layers=3, d_mlp=8)


def test_from_indices_refuses_unknown_emotion_and_bad_pairs():
    with pytest.raises(InputError, match=r"unknown emotion\(s\) \['calm'\]"):
        NeuronSet.from_indices(EMOS, {"calm": [(0, 0)]}, 3, 8)
    with pytest.raises(InputError, match="not a \\(layer, neuron\\) pair"):
        NeuronSet.from_indices(EMOS, {"sad": [(0, 0, 1)]}, 3, 8)


def test_constructor_validation():
    with pytest.raises(InputError, match="2 mask rows but 3 emotions"):
        NeuronSet(torch.zeros(2, 3, 8, dtype=torch.bool), EMOS)
    with pytest.raises(InputError, match="unknown site 'mlp'"):
        NeuronSet(torch.zeros(3, 3, 8, dtype=torch.bool), EMOS, site="mlp")
    with pytest.raises(InputError, match="distinct"):
        NeuronSet(torch.zeros(2, 3, 8, dtype=torch.bool), ("a", "a"))


# ---------------------------------------------------------------------- set algebra
def test_union_intersection_jaccard_on_known_sets():
    a, b = known_a(), known_b()
    u, i = a.union(b), a.intersection(b)
    assert u.indices("angry").tolist() == [[0, 1], [0, 2], [1, 1], [2, 7]]
    assert u.indices("happy").tolist() == [[1, 0], [2, 0]]
    assert i.indices("angry").tolist() == [[0, 2], [2, 7]]
    assert i.counts == {"angry": 2, "happy": 0, "sad": 0}
    assert (a | b) == u and (a & b) == i
    assert u.selector == "mad" and u.top_frac == 0.01 and u.model_fingerprint == "fp-a"
    assert u.meta["op"] == "union"
    assert a.jaccard(b) == {"angry": 2 / 4, "happy": 0.0, "sad": 1.0}  # two empty sets: 1.0
    assert a.jaccard(a) == {"angry": 1.0, "happy": 1.0, "sad": 1.0}


def test_overlap_matrix_every_emotion_pair():
    a = known_a()
    other = NeuronSet.from_indices(
        ("neutral", "anger"), {"neutral": [(1, 0), (0, 0)], "anger": [(0, 1), (0, 2)]}, 3, 8, model_fingerprint="fp-a"
    )
    inter = a.overlap_matrix(other, "intersection")
    assert inter.tolist() == [[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]]
    jac = a.overlap_matrix(other)
    assert jac.shape == (3, 2) and jac.dtype == torch.float64
    assert jac.tolist() == [[0.0, 2 / 3], [1 / 2, 0.0], [0.0, 0.0]]
    ovl = a.overlap_matrix(other, "overlap")
    assert ovl.tolist() == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]  # empty side: 1.0
    # the per-emotion jaccard is the diagonal of the matrix for the same emotions
    b = known_b()
    assert torch.diagonal(a.overlap_matrix(b)).tolist() == list(a.jaccard(b).values())
    with pytest.raises(InputError, match="unknown overlap metric 'dice'"):
        a.overlap_matrix(other, "dice")


@pytest.mark.parametrize(
    "change, msg",
    [
        (dict(model_fingerprint="fp-other"), "different models"),
        (dict(site="post"), "different sites"),
        (dict(emotions=("angry", "happy", "calm")), "different emotions"),
        (dict(d_mlp=9), "different shapes"),
    ],
)
def test_combining_incompatible_sets_raises(change, msg):
    a = known_a()
    kw = dict(emotions=EMOS, n_layers=3, d_mlp=8, site="act", model_fingerprint="fp-a") | change
    other = NeuronSet.from_indices(kw.pop("emotions"), {}, kw.pop("n_layers"), kw.pop("d_mlp"), **kw)
    for op in (a.union, a.intersection, a.jaccard):
        with pytest.raises(IncompatibleError, match=msg):
            op(other)
    if msg == "different emotions":
        assert a.overlap_matrix(other).shape == (3, 3)  # allowed across datasets
    else:
        with pytest.raises(IncompatibleError, match=msg):
            a.overlap_matrix(other)
    if msg == "different models":
        assert a.overlap_matrix(other, same_model=False).tolist() == [[0.0] * 3, [0.0] * 3, [1.0] * 3]  # empty vs empty: 1.0


# ---------------------------------------------------------------------- files
def test_save_load_round_trip(tmp_path):
    a = known_a()
    path = tmp_path / "sets" / "a.safetensors"
    path.parent.mkdir()
    a.save(path)
    b = NeuronSet.load(path, expect_fingerprint="fp-a", expect_site="act")
    assert b == a
    assert b.meta == {"dataset": "iemocap"} and b.top_frac == 0.01 and b.selector == "mad"
    assert b.counts == a.counts and torch.equal(b.layer_counts(), a.layer_counts())
    # a set with no budget and free metadata that is not JSON
    c = NeuronSet(a.masks, EMOS, top_frac=None, site="post", meta={"obj": object(), "k": [1, 2]})
    c.save(tmp_path / "c.safetensors")
    c2 = NeuronSet.load(tmp_path / "c.safetensors")
    assert c2 == c and c2.top_frac is None and c2.site == "post"
    assert c2.meta["k"] == [1, 2] and c2.meta["obj"].startswith("<object")


def test_load_refuses_other_model_or_site(tmp_path):
    path = tmp_path / "a.safetensors"
    known_a().save(path)
    with pytest.raises(IncompatibleError, match=rf"{path.name}: neuron set was selected on model 'fp-a', not 'fp-b'"):
        NeuronSet.load(path, expect_fingerprint="fp-b")
    with pytest.raises(IncompatibleError, match=rf"{path.name}: neuron set is for site 'act', not 'post'"):
        NeuronSet.load(path, expect_site="post")


def test_load_refuses_corrupt_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x13garbage bytes, not a safetensors file" * 3)
    with pytest.raises(CorruptFileError, match="garbage.safetensors"):
        NeuronSet.load(garbage)
    good = tmp_path / "good.safetensors"
    known_a().save(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(CorruptFileError, match="truncated.safetensors"):
        NeuronSet.load(truncated)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"masks": torch.zeros(3, 3, 8, dtype=torch.bool)}, str(foreign))
    with pytest.raises(CorruptFileError, match="foreign.safetensors: expected an esn_lens neuron_set file, found a foreign"):
        NeuronSet.load(foreign)
    stats = tmp_path / "stats.safetensors"
    NeuronStats(EMOS, n_layers=3, d_mlp=8).save(stats)
    with pytest.raises(CorruptFileError, match="found neuron_stats"):
        NeuronSet.load(stats)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        NeuronSet.load(tmp_path / "missing.safetensors")


def test_load_refuses_damaged_masks(tmp_path):
    from esn_lens.io import save_tensors

    path = tmp_path / "bad.safetensors"
    meta = known_a()._file_meta()
    save_tensors(path, {"masks": torch.zeros(3, 3, 7, dtype=torch.bool)}, "neuron_set", meta)
    with pytest.raises(CorruptFileError, match=r"bad.safetensors: damaged neuron set file \(masks are torch.bool \(3, 3, 7\)"):
        NeuronSet.load(path)
    del meta["site"]
    save_tensors(path, {"masks": torch.zeros(3, 3, 8, dtype=torch.bool)}, "neuron_set", meta)
    with pytest.raises(CorruptFileError, match=r"missing \['site'\]"):
        NeuronSet.load(path)


# ---------------------------------------------------------------------- display
def test_repr_is_readable():
    text = repr(known_a())
    assert text.startswith("NeuronSet(selector='mad', r=0.01, site='act', model=fp-a, layers=3, d_mlp=8;")
    assert "counts: angry=3, happy=1, sad=0" in text
    assert "top layers: L0:2, L1:1, L2:1" in text
