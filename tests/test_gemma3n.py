"""Gemma 3n specifics on a tiny real model (the common family checks are in test_families.py): the activation-sparse
layer's hook_act, the AltUp residual sites, the soft-capped logits site, and loading without the timm vision tower."""
from __future__ import annotations

import json

import pytest
import torch

from esn_lens.errors import UnsupportedModelError
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny, tiny_audio

PROMPTS = ["Which emotion is it?", "Name the emotion"]


@pytest.fixture(scope="module")
def tiny():
    model, proc = build_tiny("gemma3n", seed=5)
    lens = Lens(model, proc)
    b = lens.batch([tiny_audio(0.3, freq=190, seed=1), tiny_audio(0.8, freq=260, seed=2)], PROMPTS, sampling_rate=16000)
    return model, proc, lens, b


def test_sparse_layer_hook_act_is_zero_where_the_gaussian_top_k_cut_the_gate(tiny):
    """Layer 0 has activation sparsity 0.95: hook_act = gelu_tanh(relu(gate - (mean + std * Phi^-1(0.95)))), so it is
    exactly 0 where hook_pre is at or below that cutoff and fires (> 0) exactly above it; layer 1 (dense) is
    gelu_tanh(gate). Statistics count layer 0's firing tokens as the gates above the cutoff."""
    model, _, lens, b = tiny
    text = model.config.text_config
    assert text.activation_sparsity_pattern == [0.95, 0.0]
    pre, act = [], []
    with lens.trace(b):  # forward order: layer 0's pre and act, then layer 1's
        for i in range(2):
            pre.append(lens.blocks[i].mlp.hook_pre.output.save())
            act.append(lens.blocks[i].mlp.hook_act.output.save())
    gelu = torch.nn.GELU(approximate="tanh")
    cutoff = pre[0].mean(-1, keepdim=True) + pre[0].std(-1, keepdim=True, unbiased=False) * 1.6448536269514722
    above = pre[0] > cutoff
    assert torch.equal(act[0] > 0, above) and bool((act[0][~above] == 0).all())
    assert torch.allclose(act[0], gelu(torch.relu(pre[0] - cutoff)), atol=1e-6)
    valid = ~b.masks.padding
    frac = above[valid].float().mean().item()
    assert 0.0 < frac < 0.15, frac  # about 5% of 64 neurons pass a 95% Gaussian cutoff
    assert torch.allclose(act[1], gelu(pre[1]), atol=1e-6) and bool((act[1] < 0).any())
    stats = lens.new_stats(["angry", "happy"], positions="valid")
    lens.run(b, stats=stats, emotion_index=torch.tensor([0, 1]), logits="none")
    special = torch.isin(b.inputs["input_ids"], torch.tensor(sorted(set(lens.tokenizer.all_special_ids)
                                                                    - {lens.tokenizer.audio_token_id})))
    counted = valid & ~special
    for row in range(2):
        assert torch.equal(stats.K[row, 0], above[row][counted[row]].sum(0).to(stats.K.dtype))


def _plain_logits(model, b, layer_edit=None):
    """The model's returned logits with an optional plain hook editing decoder layer ``layer_edit[0]``'s stacked
    output (``layer_edit[1]`` mutates it in place)."""
    handles = []
    if layer_edit is not None:
        handles.append(model.model.language_model.layers[layer_edit[0]].register_forward_hook(
            lambda m, i, o: layer_edit[1](o)))
    try:
        with torch.no_grad():
            return model(**b.inputs).logits
    finally:
        for h in handles:
            h.remove()


def test_altup_residual_sites_are_the_active_stream(tiny):
    """resid_pre/resid_post are row altup_active_idx (0) of the stacked [2, batch, pos, hidden] layer input/output;
    resid_post of layer 0 is resid_pre of layer 1; recorded by the library's hooks or read by nnsight, they equal
    plain hooks; an nnsight edit of the site equals a plain edit of that stream only."""
    model, _, lens, b = tiny
    layers = model.model.language_model.layers
    got: dict = {}

    def keep(name, value):
        got.setdefault(name, value.clone())  # returns None: the hook changes nothing
    hs = [layers[0].register_forward_hook(lambda m, i, o: keep("out0", o)),
          layers[1].register_forward_pre_hook(lambda m, a, kw: keep("in1", a[0]), with_kwargs=True)]
    try:
        with lens.trace(b):
            r0 = lens.blocks[0].hook_resid_post.output.save()
            r1 = lens.blocks[1].hook_resid_pre.output.save()
    finally:
        for h in hs:
            h.remove()
    assert got["out0"].shape[0] == 2 and torch.equal(r0, got["out0"][0]) and torch.equal(r1, got["in1"][0])
    assert not torch.allclose(got["out0"][1], got["out0"][0])  # the other stream is another value
    cache = lens.run(b, record=["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"]).cache
    assert torch.equal(cache["blocks.1.hook_resid_pre"], r1) and torch.equal(cache["blocks.0.hook_resid_post"], r0)

    def zero(o):
        o[0][..., 3] = 0.0
    ref = _plain_logits(model, b, (0, zero))
    with lens.trace(b):
        lens.blocks[0].hook_resid_post.output[..., 3] = 0.0
        edited = lens.logits.save()
    assert torch.allclose(edited, ref, atol=1e-6) and not torch.allclose(ref, _plain_logits(model, b), atol=1e-5)
    with lens.trace(b):  # assigning the whole site replaces stream 0 of layer 1's input
        h = lens.blocks[1].hook_resid_pre.output
        lens.blocks[1].hook_resid_pre.output = h * 2.0
        doubled = lens.logits.save()

    def double(o):
        o[0] *= 2.0
    assert torch.allclose(doubled, _plain_logits(model, b, (0, double)), atol=1e-6)


def test_logits_site_is_the_soft_capped_returned_logits():
    """With final_logit_softcapping = 0.05 the returned logits are 0.05 * tanh(lm_head / 0.05): lens.logits (traced,
    plain run, audio-keeping run, and a run reusing that audio) is that, not lm_head's raw output."""
    model, proc = build_tiny("gemma3n", seed=5)
    model.config.text_config.final_logit_softcapping = 0.05
    lens = Lens(model, proc)
    b = lens.batch([tiny_audio(0.5)], PROMPTS[0], sampling_rate=16000)
    raw = {}
    h = model.lm_head.register_forward_hook(lambda m, i, o: raw.setdefault("x", o))
    try:
        with torch.no_grad():
            ref = model(**b.inputs).logits
    finally:
        h.remove()
    assert torch.allclose(ref, 0.05 * torch.tanh(raw["x"] / 0.05), atol=1e-7)
    assert ref.abs().max() <= 0.05 and raw["x"].abs().max() > 0.1
    with lens.trace(b):
        traced = lens.logits.save()
    assert torch.equal(traced, ref)
    last = ref[:, -1]
    kept = lens.run(b, keep_audio=True)
    for out in (lens.run(b), kept, lens.run(b, audio_cache=kept.audio)):
        assert torch.allclose(out.logits, last, atol=1e-6)


def test_loads_without_timm_skipping_the_vision_tower(tiny, tmp_path):
    """A saved folder whose config names the real ``gemma3n_vision`` tower and whose weights include vision-tower
    tensors loads without timm: the vision tower is the no-vision stand-in (its weights skipped), logits equal the
    original's, and images give one clear error. With timm the config is left as it is."""
    from safetensors.torch import load_file, save_file

    from esn_lens.adapters.gemma3n import Gemma3nAdapter
    from esn_lens.adapters.gemma3n_vision import NO_VISION_TYPE

    model, proc, lens, b = tiny
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["vision_config"]["model_type"] == NO_VISION_TYPE
    cfg["vision_config"]["model_type"] = "gemma3n_vision"  # as the release writes it
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["model.vision_tower.timm_model.conv_stem.conv.weight"] = torch.randn(8, 3, 3, 3)
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = Lens.from_pretrained(str(tmp_path))
    tower = loaded.model.model.vision_tower
    assert type(tower).__name__ == "NoVisionTower" and not list(tower.parameters())
    assert torch.allclose(loaded.run(b).logits, lens.run(b).logits, atol=1e-6)
    with pytest.raises(UnsupportedModelError, match="no vision tower"):
        loaded.model(**b.inputs, pixel_values=torch.zeros(1, 3, 32, 32))
    from transformers import AutoConfig

    import esn_lens.adapters.gemma3n as g

    real = AutoConfig.from_pretrained(str(tmp_path))
    assert type(real.vision_config).__name__ == "Gemma3nVisionConfig"
    assert Gemma3nAdapter.prepare_config(real).vision_config.model_type == NO_VISION_TYPE
    g_timm, g.timm_available = g.timm_available, lambda: True
    try:
        assert Gemma3nAdapter.prepare_config(real) is real
    finally:
        g.timm_available = g_timm


def test_text_only_inputs(tiny):
    """Without audio the prompt has no audio block and no input features; its prompt text is still found."""
    _, _, lens, _ = tiny
    b = lens.batch(None, PROMPTS)
    assert "input_features" not in b.inputs and not b.masks.audio.any()
    tok = lens.tokenizer
    for i, p in enumerate(PROMPTS):
        assert tok.decode(b.inputs["input_ids"][i][b.masks.prompt_text[i]]).strip() == p
    assert (b.inputs["input_ids"] == tok.bos_token_id).sum().item() == 2  # the template's <bos>, not a second one
    assert lens.run(b).logits.shape == (2, 320)


def test_encoder_units_are_refused_with_one_line(tiny):
    """``--units encoder`` needs a Whisper-style encoder MLP (fc1, activation_fn, fc2); Gemma 3n's USM conformer is
    refused with one line naming the family (as its support row says)."""
    from esn_lens.adapters.encoder import encoder_lens

    _, _, lens, _ = tiny
    with pytest.raises(UnsupportedModelError, match=r"^gemma3n: no batched Whisper-style encoder layers"):
        encoder_lens(lens)
