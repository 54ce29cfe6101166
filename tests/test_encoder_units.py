"""Audio-encoder MLP neurons as units (issue #28): statistics, recorded sites, edits and SER evaluation on the
Whisper-style encoders of Qwen2-Audio and Audio Flamingo 3, and the packed encoders of the Qwen2.5-Omni and Qwen3-Omni
thinkers, equal plain torch hooks (K and T exactly); a model without an audio encoder is refused in one line."""
from __future__ import annotations

import pytest
import torch

from esn_lens import Lens, deactivate, find_neurons, steer
from esn_lens.adapters.encoder import ENCODER_MLP_SITES, encoder_lens
from esn_lens.data import EmotionClip
from esn_lens.errors import UnsupportedModelError
from esn_lens.evaluate import SEREvaluator
from esn_lens.interventions import Condition
from esn_lens.testing import build_tiny, tiny_audio

EMOS = ("angry", "happy")


def clips():
    return [EmotionClip(f"c{i}", EMOS[i % 2], audio=tiny_audio(0.3 + 0.2 * i, freq=150 + 200 * (i % 2), seed=i),
                        sampling_rate=16000) for i in range(4)]


@pytest.mark.parametrize("family", ["qwen2_audio", "audio_flamingo3"])
def test_encoder_units_equal_plain_hooks(family):
    torch.manual_seed(0)
    model, proc = build_tiny(family, seed=0)
    lens = Lens(model, proc)
    enc = encoder_lens(lens)
    tower_layers = model.get_submodule(lens.adapter.audio_tower_path).layers
    assert (enc.n_layers, enc.d_mlp) == (len(tower_layers), tower_layers[0].fc1.out_features)
    cs = clips()
    batch = enc.batch_clips(cs, "Which emotion?")
    n_feat = batch.inputs[[k for k in batch.inputs if k.endswith(("feature_attention_mask", "input_features_mask"))][0]]
    frames = (n_feat.sum(1) - 1) // 2 + 1
    assert batch.masks.valid.sum(1).tolist() == frames.tolist()  # valid = the frames of real audio

    # plain hooks on every encoder layer's fc1 output, activation_fn output and fc2 input
    ref, hooks = {}, []
    for l, layer in enumerate(tower_layers):
        hooks.append(layer.fc1.register_forward_hook(lambda m, i, o, l=l: ref.__setitem__((l, "pre"), o.detach())))
        hooks.append(layer.activation_fn.register_forward_hook(lambda m, i, o, l=l: ref.__setitem__((l, "act"), o.detach())))
        hooks.append(layer.fc2.register_forward_pre_hook(lambda m, i, l=l: ref.__setitem__((l, "post"), i[0].detach())))
    with torch.no_grad():
        plain = model(**batch.inputs).logits[:, -1]
    for h in hooks:
        h.remove()
    out = enc.run(batch, record=[f"blocks.{l}.mlp.hook_{s}" for l in range(enc.n_layers) for s in ENCODER_MLP_SITES])
    for (l, s), v in ref.items():
        assert torch.equal(out.cache[f"blocks.{l}.mlp.hook_{s}"], v), (l, s)
    assert torch.equal(out.logits, plain.float())  # the logits are the model's (last token position)

    # statistics: K and T exactly from the hooked values over the valid frames
    stats = enc.collect_stats(cs, "Which emotion?", EMOS, batch_size=4, progress=False)
    valid = batch.masks.valid
    y = torch.tensor([EMOS.index(c.emotion) for c in cs])
    for e in range(2):
        rows = valid & (y == e)[:, None]
        assert stats.T[e].item() == rows.sum().item()
        for l in range(enc.n_layers):
            assert torch.equal(stats.K[e, l], ((ref[(l, "act")] > 0) & rows[..., None]).sum((0, 1)).double())

    # an edit of encoder units equals zeroing them with a plain hook; SER conditions run through the encoder units
    ns = find_neurons(stats, "mad", count=5)
    mask = ns["angry"]
    edited = enc.run(batch, edits=[deactivate(mask)]).logits
    hooks = [layer.activation_fn.register_forward_hook(lambda m, i, o, l=l: o.masked_fill(mask[l], 0.0))
             for l, layer in enumerate(tower_layers)]
    with torch.no_grad():
        by_hand = model(**batch.inputs).logits[:, -1].float()
    for h in hooks:
        h.remove()
    assert torch.allclose(edited, by_hand, atol=1e-5) and not torch.allclose(edited, plain.float(), atol=1e-5)
    ev_enc, ev_dec = SEREvaluator(enc, EMOS, answer="word", batch_size=4), SEREvaluator(lens, EMOS, answer="word", batch_size=4)
    assert not ev_enc.encoder_reuse  # the encoder runs in every condition: its units are edited inside it
    res = ev_enc.run(cs, [Condition.baseline(), Condition.deactivate("angry", [deactivate(mask)])])
    assert res["baseline"].predictions == ev_dec.run(cs)["baseline"].predictions


def test_models_without_encoder_refused():
    with pytest.raises(UnsupportedModelError, match="no batched Whisper-style encoder layers"):
        encoder_lens(Lens(*build_tiny("qwen2", seed=0)))  # a text model has no encoder


@pytest.mark.parametrize("family,frames", [("qwen2_5_omni_thinker", (30, 65)),  # 1 stride-2 conv: (n - 1) // 2 + 1
                                           ("qwen3_omni_moe_thinker", (8, 17))])  # 3 per chunk: 60 -> 8, 100 + 30 -> 13 + 4
def test_packed_omni_encoder_units_equal_plain_hooks(family, frames):
    """The Omni thinkers' towers pack the batch's clips into one (frames, d) sequence, in chunks of 2 * n_window
    feature frames; encoder units unpack it to (clip, frame, neuron) and equal plain hooks on the packed MLPs --
    recorded values, K and T, deactivate and steer, and the same operations inside lens.trace."""
    torch.manual_seed(0)
    n0, n1 = frames
    model, proc = build_tiny(family, seed=0)
    enc = encoder_lens(Lens(model, proc))
    tower = model.get_submodule(enc.adapter.base.audio_tower_path)
    layers = tower.layers
    # 0.6 s and 1.3 s: 60 and 130 feature frames; the second is cut into chunks of 100 + 30 (n_window = 50)
    cs = [EmotionClip(f"c{i}", EMOS[i], audio=tiny_audio(d, freq=150 + 200 * i, seed=i), sampling_rate=16000)
          for i, d in enumerate((0.6, 1.3))]
    assert tower.n_window == 50
    batch = enc.batch_clips(cs, "Which emotion?")
    assert batch.inputs["feature_attention_mask"].sum(1).tolist() == [60, 130]
    valid = batch.masks.valid
    assert valid.sum(1).tolist() == [n0, n1] and valid.shape == (2, n1)  # each clip's frames; the longest clip

    def plain(edit=None):
        ref, hooks = {}, []
        for l, layer in enumerate(layers):
            hooks.append(layer.fc1.register_forward_hook(lambda m, i, o, l=l: ref.__setitem__((l, "pre"), o.detach())))
            hooks.append(layer.activation_fn.register_forward_hook(
                lambda m, i, o, l=l: edit(o, l) if edit else ref.__setitem__((l, "act"), o.detach())))
            hooks.append(layer.fc2.register_forward_pre_hook(lambda m, i, l=l: ref.__setitem__((l, "post"), i[0].detach())))
        try:
            with torch.no_grad():
                return model(**batch.inputs).logits[:, -1].float(), ref
        finally:
            for h in hooks:
                h.remove()

    base, ref = plain()
    assert ref[(0, "act")].shape == (n0 + n1, layers[0].fc1.out_features)  # one packed sequence of both clips
    out = enc.run(batch, record=[f"blocks.{l}.mlp.hook_{s}" for l in range(enc.n_layers) for s in ENCODER_MLP_SITES])
    for (l, s), v in ref.items():
        got = out.cache[f"blocks.{l}.mlp.hook_{s}"]
        assert got.shape == (2, n1, v.shape[-1])
        assert torch.equal(got[0, :n0], v[:n0]) and torch.equal(got[1], v[n0:]) and not got[0, n0:].any(), (l, s)
    assert torch.equal(out.logits, base)

    # K and T exactly from the packed values: clip 0 (angry) = packed rows :n0, clip 1 (happy) = rows n0:
    stats = enc.collect_stats(cs, "Which emotion?", EMOS, batch_size=2, progress=False)
    assert stats.T.reshape(-1).tolist() == [n0, n1]
    for l in range(enc.n_layers):
        on = ref[(l, "act")] > 0
        assert torch.equal(stats.K[0, l], on[:n0].sum(0).double()) and torch.equal(stats.K[1, l], on[n0:].sum(0).double())

    # edits on encoder units equal the same edit by a plain hook on the packed activations
    mask = find_neurons(stats, "mad", count=5)["angry"]
    for edit, by_hook in ((deactivate(mask), lambda o, l: o.masked_fill(mask[l], 0.0)),
                          (steer(mask, alpha=3.0), lambda o, l: torch.where(mask[l], o * 4.0, o))):
        want, _ = plain(by_hook)
        assert not torch.allclose(want, base, atol=1e-5)
        assert torch.allclose(enc.run(batch, edits=[edit]).logits, want, atol=1e-6)
        traced = enc.new_stats(EMOS)
        with enc.trace(batch, inference=True):  # the same operations inside the open trace
            edit.apply(enc)
            traced.record(enc)  # after the edit: it counts the edited values
            lg = enc.logits.output[:, -1].save()
        assert torch.allclose(lg.float(), want, atol=1e-6)
        assert traced.T.reshape(-1).tolist() == [n0, n1]
        kept = stats.K[:, 0][:, mask[0]] if edit.gain else torch.zeros_like(stats.K[:, 0][:, mask[0]])
        assert mask[0].any() and torch.equal(traced.K[:, 0][:, mask[0]], kept)  # layer 0: zeroed, or positive x 4


def test_demo_run_on_encoder_units(tmp_path):
    """`esn-lens demo --quick --units encoder`: the whole run completes on the demo's encoder units (1 layer x 128),
    its neuron sets are over them, and the choice is part of the run's identity (decoder units stay the default)."""
    import json

    from esn_lens.cli import main
    from esn_lens.demo_model import demo_clips, demo_model_dir
    from esn_lens.neurons import NeuronSet

    if not ((demo_model_dir() / "config.json").is_file() and demo_clips("unseen")):
        pytest.skip("the demo model's assets are not shipped")
    out = tmp_path / "enc"
    assert main(["demo", "--quick", "--units", "encoder", "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert json.dumps(cfg).count('"units": "encoder"') >= 1
    sets = sorted((out / "neurons").glob("*.safetensors"))
    assert len(sets) == 5
    for f in sets:
        ns = NeuronSet.load(f)
        assert tuple(ns["angry"].shape) == (1, 128)  # the demo encoder's 1 layer x 128 MLP units, not the decoder's
    r = json.loads((out / "results.json").read_text())
    assert {"heatmap", "ess"} <= set(r["selectors"]["conact"]["deactivation"])


def test_units_option_checked_and_other_packed_towers_refused():
    from esn_lens.adapters.encoder import packed_frames
    from esn_lens.errors import InputError
    from esn_lens.run import RunConfig

    with pytest.raises(InputError, match="units must be 'decoder' or 'encoder', got 'encoders'"):
        RunConfig(units="encoders").check()
    assert "units" not in RunConfig().identity() and RunConfig(units="encoder").identity()["units"] == "encoder"
    assert packed_frames(torch.nn.Linear(2, 2)) is None  # a tower of no known layout: encoder_lens refuses it
    f = packed_frames(build_tiny("qwen2_5_omni_thinker", seed=0)[0].model.audio_tower)
    assert f(torch.tensor([0, 1, 60, 130])).tolist() == [0, 1, 30, 65]
