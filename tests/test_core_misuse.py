"""Issue 22, items 2, 4, 5 and 6: batch identity, public invoke masks, and misuse of the Python API answered by the
library's own one-line errors before the forward starts (tiny real models)."""
import copy
import functools
import warnings

import pytest
import torch

from esn_lens import deactivate, steer
from esn_lens.errors import InputError, TraceOrderError
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny, tiny_audio

import nnsight  # noqa: E402,F401


@functools.lru_cache(maxsize=None)
def _lens(family="qwen2_audio", **kw):
    model, proc = build_tiny(family, **dict(kw))
    return Lens(model, proc)


def _audio_batch(lens, n=2, labels=None, seed=0):
    audios = [tiny_audio(0.3 + 0.2 * i, freq=170 + 60 * i + seed, seed=i + seed) for i in range(n)]
    return lens.batch(audios, ["Which emotion?", "Name it", "Say it"][:n], sampling_rate=16000, labels=labels)


def _forwards(lens):
    """A counter of the root module's forward calls (to show an error came before the forward)."""
    calls = [0]
    h = lens.adapter.root().register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls, h


def _units(lens, layer=0, idx=(1, 4)):
    u = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    u[layer, list(idx)] = True
    return u


# ---------------------------------------------------------------------- item 2: batch identity
def test_a_batch_of_another_processor_is_refused_and_a_shared_processor_accepted():
    lens = _lens()
    other = _lens(extra_words=("zebra", "giraffe"))  # another tokenizer vocabulary
    assert lens.processor_id != other.processor_id
    batch = _audio_batch(lens)
    calls, h = _forwards(other)
    try:
        for call in (lambda: other.run(batch), lambda: other.trace(batch).__enter__()):
            with pytest.raises(InputError, match="another processor"):
                call()
        with pytest.raises(InputError, match="another processor"):
            with other.trace() as tracer:
                with tracer.invoke(batch):
                    other.logits.save()
        assert calls[0] == 0
    finally:
        h.remove()
    # a fine-tuned copy (same processor, perturbed weights) accepts the batch, and its logits differ
    tuned = copy.deepcopy(lens.model)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn_like(p))
    copy_lens = Lens(tuned, lens.processor)
    assert copy_lens.processor_id == lens.processor_id and copy_lens.fingerprint != lens.fingerprint or True
    a, b = lens.run(batch).logits, copy_lens.run(batch).logits
    assert a.shape == b.shape and not torch.equal(a, b)
    box = {}
    with copy_lens.trace(batch):
        box["lg"] = copy_lens.logits.output[:, -1].save()
    assert torch.equal(box["lg"].float(), b)


# ---------------------------------------------------------------------- item 4: invoke masks
def test_invoke_masks_are_public_and_positions_work_per_invoke():
    lens = _lens()
    a = lens.batch([tiny_audio(1.2, seed=1), tiny_audio(0.4, seed=2)], ["Which emotion is it, in one word?", "Name it"],
                   sampling_rate=16000)
    b = lens.batch([tiny_audio(0.2, freq=300, seed=5)], ["Hi"], sampling_rate=16000)
    assert b.masks.audio.shape[1] < a.masks.audio.shape[1]
    pa, pb = lens.pad_batches([a, b])
    units = torch.ones(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    box = {}
    with lens.trace() as tracer:
        with tracer.invoke(a):
            box["ma"] = tracer.invoke_masks[0].audio.clone()
            box["la"] = lens.logits.output[:, -1].save()
        with tracer.invoke(b):
            m = lens.invoke_masks()
            box["mb"] = m.audio.clone()
            deactivate(units, positions=m.audio).apply(lens)  # the invoke's own padded mask
            box["lb"] = lens.logits.output[:, -1].save()
    assert torch.equal(box["ma"], pa.masks.audio) and torch.equal(box["mb"], pb.masks.audio)
    assert box["mb"].shape[1] > b.masks.audio.shape[1]  # padded to the combined length
    # the same edit by position-set name, and alone on the padded batch: the same logits
    ref = lens.run(pb, edits=[deactivate(units, positions="audio")]).logits
    assert torch.allclose(box["lb"].float(), ref, atol=1e-6)
    base = lens.run(pb).logits
    assert (ref - base).abs().max() > 1e-4  # the edit did something (tiny random model: small)
    # the batch's own (unpadded) mask is the library's error, not an IndexError
    with pytest.raises(InputError, match="positions mask has shape"):
        with lens.trace() as tracer:
            with tracer.invoke(a):
                lens.logits.save()
            with tracer.invoke(b):
                deactivate(units, positions=b.masks.audio).apply(lens)


# ---------------------------------------------------------------------- item 5: small ones
def test_trace_of_a_list_is_the_library_input_error():
    lens = _lens()
    with pytest.raises(InputError, match="esn_lens Batch"):
        with lens.trace([tiny_audio(0.3)]):
            lens.logits.save()


def test_audio_positions_on_a_text_only_model_refuse():
    lens = _lens("qwen2")
    batch = lens.batch(None, ["hello there", "hi"])
    with pytest.raises(InputError, match="no audio positions"):
        lens.run(batch, edits=[deactivate(_units(lens), positions="audio")])
    stats = lens.new_stats(["a", "b"], positions="audio")
    with pytest.raises(InputError, match="no audio positions"):
        lens.run(batch, stats=stats, emotion_index=torch.tensor([0, 1]))


def test_out_of_order_reads_name_the_site_and_the_rule():
    lens = _lens("qwen2")
    batch = lens.batch(None, ["hello there", "hi"])
    with pytest.raises(TraceOrderError, match=r"^blocks\.0\.mlp\.hook_act: read after the model ran past it.*forward order"):
        with lens.trace(batch):
            lens.blocks[1].hook_resid_post.output.save()
            lens.blocks[0].mlp.hook_act.output.save()
    with pytest.raises(TraceOrderError, match="reverse forward order"):
        with torch.enable_grad():
            with lens.trace(batch):
                lens.embed.output.requires_grad_(True)
                a0 = lens.blocks[0].mlp.hook_act.output
                a1 = lens.blocks[1].mlp.hook_act.output
                loss = lens.logits.output.sum()
                with loss.backward():
                    a0.grad.save()
                    a1.grad.save()


def test_mean_gives_the_other_emotions_when_one_is_empty():
    lens = _lens("qwen2")
    batch = lens.batch(None, ["hello there", "hi"])
    stats = lens.new_stats(["angry", "happy", "sad"])
    lens.run(batch, stats=stats, emotion_index=torch.tensor([0, 2]))
    with pytest.warns(UserWarning, match=r"\['happy'\]"):
        mean = stats.mean
    assert torch.isnan(mean[1]).all() and not torch.isnan(mean[[0, 2]]).any()
    assert torch.equal(mean[0], stats.sum[0] / stats.T[0])
    empty = lens.new_stats(["angry"])
    with pytest.raises(InputError, match="no counted tokens"):
        empty.mean


# ---------------------------------------------------------------------- item 6: misuse before the forward
@pytest.mark.parametrize("misuse, match", [
    (lambda lens, b: lens.run(b, record=["blocks.0.mlp.hook_actt"]), "unknown site name"),
    (lambda lens, b: lens.run(b, record=["blocks.7.hook_resid_post"]), "layer 7 out of range"),
    (lambda lens, b: lens.run(b, edits=[deactivate(torch.zeros(3, 5, dtype=torch.bool))]), "units mask has shape"),
    (lambda lens, b: lens.run(b, edits=[deactivate(_units(lens), positions=torch.ones(2, 3, dtype=torch.bool))]),
     "positions mask has shape"),
    (lambda lens, b: lens.run(b, edits=[steer(_units(lens), rows=torch.tensor([True, False, True]))]),
     "rows mask has 3 rows, the batch has 2"),
    (lambda lens, b: lens.site("blocks.0.mlp.nope"), "unknown site name"),
    (lambda lens, b: lens.blocks[5], "out of range"),
])
def test_misuse_is_the_library_error_before_the_forward(misuse, match):
    lens = _lens("qwen2")
    batch = lens.batch(None, ["hello there", "hi"])
    calls, h = _forwards(lens)
    try:
        with pytest.raises(InputError, match=match) as e:
            misuse(lens, batch)
        assert "\n" not in str(e.value)
        assert calls[0] == 0
    finally:
        h.remove()


def test_misuse_inside_a_trace_is_refused_before_the_forward():
    lens = _lens("qwen2")
    batch = lens.batch(None, ["hello there", "hi"])
    calls, h = _forwards(lens)
    try:
        with pytest.raises(InputError, match="rows mask has 1 rows"):
            with lens.trace(batch):
                steer(_units(lens), rows=torch.tensor([True])).apply(lens)
                lens.logits.save()
        assert calls[0] == 0
    finally:
        h.remove()


def test_any_site_kind_can_be_recorded_by_run():
    lens = _lens()
    batch = _audio_batch(lens)
    names = ["hook_embed", "audio_encoder", "blocks.1.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.1.mlp.hook_pre",
             "blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post", "logits"]
    out = lens.run(batch, record=names, logits="all")
    assert set(out.cache) == set(names)
    assert torch.equal(out.cache["logits"].float(), out.logits)
    box = {}
    with lens.trace(batch):
        box["r"] = lens.blocks[1].hook_resid_post.output.save()
    assert torch.equal(out.cache["blocks.1.hook_resid_post"], box["r"])
    assert lens.site_names() == [r.name for r in lens.adapter.site_table()]
    assert lens.hook_names("hook_resid_post") == [f"blocks.{i}.hook_resid_post" for i in range(lens.n_layers)]


def _tiny_families():
    from esn_lens.testing.tiny import TINY_FAMILIES

    return sorted(TINY_FAMILIES)


@pytest.mark.parametrize("family", _tiny_families())
def test_the_site_table_is_the_one_list_of_sites(family):
    """Every family's table lists the vocabulary's per-layer kinds in forward order (plus any rows the family adds),
    every row names a real module, and docs/api.md names every vocabulary kind."""
    from pathlib import Path

    from esn_lens.sites import MissingSite
    from esn_lens.vocab import LAYER_SITE_KINDS

    lens = _lens(family)
    rows = lens.adapter.site_table()
    kinds = [r.name.split(".", 2)[2] for r in lens.adapter.layer_site_rows(0)]
    it = iter(kinds)  # the vocabulary's kinds, in order (a family may add its own rows between them, e.g. MoE routing)
    assert all(k in it for k in LAYER_SITE_KINDS), kinds
    assert rows[0].name == "hook_embed" and rows[-1].name == "logits"
    assert (rows[1].name == "audio_encoder") == (lens.audio_encoder is not None)
    assert not [n for n, s in lens.sites.sites.items() if isinstance(s, MissingSite)]
    api = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    assert all(k.split(".")[-1] in api for k in LAYER_SITE_KINDS)
