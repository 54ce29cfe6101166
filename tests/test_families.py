"""The families added after the paper's three (one module-scoped tiny model each): positions, every named site,
deactivation and steering in a forward and in greedy generation, all against plain torch hooks on the same
modules, and ``esn-lens run`` on a saved tiny folder."""
from __future__ import annotations

import json

import pytest
import torch

from esn_lens import deactivate, steer
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny, tiny_audio
from pipeline_assets import run_main, write_tone_corpus

#: family -> (seed whose random weights answer >= 1 tone clip of every emotion, special tokens around the audio)
FAMILIES = {"music_flamingo": (4, ("<|sound_bos|>", "<|sound_eos|>")),
            "glm_asr": (3, ("<|begin_of_audio|>", "<|end_of_audio|>")),
            "qwen3_asr": (2, ("<|audio_bos|>", "<|audio_eos|>")),
            "voxtral": (2, ("[BEGIN_AUDIO]",)),
            "phi4_multimodal": (0, ()),
            "gemma4": (0, ("<|audio>", "<audio|>")),
            "gemma4_unified": (2, ("<|audio>", "<audio|>")),
            "granite_speech": (8, ()),
            "gemma3n": (5, ("<start_of_audio>", "<end_of_audio>")),
            "moss_transcribe_diarize": (19, ("<|audio_bos|>", "<|audio_eos|>"))}
#: families whose audio positions do not grow with the clip: clip lengths are padded to whole chunks (Gemma 3n: a fixed
#: count per clip)
CHUNKED_AUDIO = {"voxtral": 375, "gemma3n": 188}
#: families whose decoder layers carry a stacked residual [streams, batch, pos, hidden] (Gemma 3n's AltUp): the
#: residual sites are the active stream's row
STACKED_RESIDUAL = {"gemma3n": 0}
#: families whose audio encoder sees the feature padding of a shorter clip in a batch (the model's own forward: Phi-4's
#: conformer gives a padded 0.3 s clip audio embeddings ~4e-5 off its own; Granite Speech's processor computes the
#: features of the zero-padded batch, so a 0.3 s clip's last frame differs and its logits move ~1e-4): rows-alone is
#: checked on equal-length clips
PADDING_SENSITIVE_ENCODER = {"phi4_multimodal", "granite_speech"}
PROMPTS = ["Which emotion is it?", "Name the emotion"]


@pytest.fixture(scope="module", params=list(FAMILIES))
def fam(request):
    name = request.param
    model, proc = build_tiny(name, seed=FAMILIES[name][0])
    lens = Lens(model, proc)
    auds = [tiny_audio(0.3, freq=190, seed=1), tiny_audio(0.8, freq=260, seed=2)]
    return name, model, proc, lens, lens.batch(auds, PROMPTS, sampling_rate=16000)


def _out(o):
    return o[0] if isinstance(o, tuple) else o


def plain(lens, batch, edit=None, capture=None, generate=0):
    """The root module on the batch with plain torch hooks: ``edit`` = (units, gain) at every layer's act_fn;
    ``capture`` = dict filled with every named site's value (first call: the prefill)."""
    a, root, handles = lens.adapter, lens.adapter.root(), []
    stream = STACKED_RESIDUAL.get(a.name)

    def keep(name, value):
        if capture is not None and name not in capture:
            if stream is not None and "resid" in name:
                value = value[stream]
            capture[name] = value.detach().clone()

    for mod in root.modules():  # Phi-4's and Granite Speech's speech LoRA (PEFT layers): on exactly with audio
        if hasattr(mod, "lora_A") and hasattr(mod, "enable_adapters"):
            mod.enable_adapters(any(k in batch.inputs for k in ("audio_input_features", "input_features")))
    for layer in range(lens.n_layers):
        mlp = root.get_submodule(a.mlp_path(layer))
        layer_mod = root.get_submodule(a.layer_path(layer))
        handles.append(layer_mod.register_forward_pre_hook(
            lambda m, args, kw, layer=layer: keep(f"{layer}.resid_pre", args[0] if args else kw["hidden_states"]),
            with_kwargs=True))
        if hasattr(mlp, "gate_up_proj"):  # Phi-4's fused MLP: the gate is the first half of gate_up_proj's output
            handles.append(mlp.gate_up_proj.register_forward_hook(
                lambda m, i, o, layer=layer: keep(f"{layer}.pre", o[..., : o.shape[-1] // 2])))
        else:
            handles.append(mlp.gate_proj.register_forward_hook(lambda m, i, o, layer=layer: keep(f"{layer}.pre", o)))

        def act(m, i, o, layer=layer):
            if edit is not None:
                o = o.clone()
                o[..., edit[0][layer]] *= edit[1]
            keep(f"{layer}.act", o)
            return o
        handles.append((getattr(mlp, "act_fn", None) or mlp.activation_fn).register_forward_hook(act))
        handles.append(mlp.down_proj.register_forward_pre_hook(lambda m, i, layer=layer: keep(f"{layer}.post", i[0])))
        handles.append(mlp.register_forward_hook(lambda m, i, o, layer=layer: keep(f"{layer}.mlp", o)))
        handles.append(layer_mod.register_forward_hook(lambda m, i, o, layer=layer: keep(f"{layer}.resid_post", _out(o))))
    # the model's returned logits (Gemma 3n soft-caps lm_head's output after it)
    handles.append(root.register_forward_hook(lambda m, i, o: keep("logits", o.logits)))
    try:
        with torch.no_grad():
            if generate:
                return root.generate(**batch.inputs, max_new_tokens=generate, do_sample=False,
                                     pad_token_id=lens.tokenizer.pad_token_id)
            return root(**batch.inputs).logits
    finally:
        for h in handles:
            h.remove()


def test_positions(fam):
    name, model, proc, lens, b = fam
    tok = lens.tokenizer
    ids = b.inputs["input_ids"]
    assert torch.equal(b.masks.audio, ids == tok.convert_tokens_to_ids(lens.adapter.audio_token))
    n_audio = b.masks.audio.sum(1).tolist()
    if name in CHUNKED_AUDIO:
        assert n_audio == [CHUNKED_AUDIO[name]] * 2  # one 30 s chunk each
    else:
        assert n_audio[0] < n_audio[1]  # 0.3 s vs 0.8 s
    for t in FAMILIES[name][1]:
        at = ids == tok.convert_tokens_to_ids(t)
        assert at.sum(1).tolist() == [1, 1] and bool(b.masks.special[at].all())
    for i, p in enumerate(PROMPTS):
        assert tok.decode(ids[i][b.masks.prompt_text[i]]).strip() == p  # the question (and the turn's newline)
    assert not (b.masks.audio & (b.masks.special | b.masks.prompt_text | b.masks.padding)).any()


def test_every_site_equals_plain_hooks(fam):
    _, _, _, lens, b = fam
    ref: dict = {}
    plain(lens, b, capture=ref)
    got: dict = {}
    with lens.trace(b):
        for layer in range(lens.n_layers):
            blk = lens.blocks[layer]
            for key, site in (("resid_pre", blk.hook_resid_pre), ("pre", blk.mlp.hook_pre), ("act", blk.mlp.hook_act),
                              ("post", blk.mlp.hook_post), ("mlp", blk.mlp), ("resid_post", blk.hook_resid_post)):
                got[f"{layer}.{key}"] = site.output.save()
        got["logits"] = lens.logits.save()
    assert set(got) == set(ref)
    for k in ref:
        assert torch.allclose(got[k], ref[k], atol=1e-6), k


def test_stats_and_rows_alone(fam):
    """NeuronStats equal an independent count over plain-hook values (valid = not padding, not a special token
    other than the audio token); every row of the left-padded batch equals that row alone."""
    name, _, _, lens, b = fam
    stats = lens.new_stats(["angry", "happy"])
    lens.run(b, stats=stats, emotion_index=torch.tensor([0, 1]), logits="none")
    ref: dict = {}
    plain(lens, b, capture=ref)
    tok = lens.tokenizer
    ids = b.inputs["input_ids"]
    decoder = getattr(tok, "added_tokens_decoder", None)  # a Tekken tokenizer (Voxtral) has none: all in all_special_ids
    added = {i for i, t in decoder.items() if t.special} if isinstance(decoder, dict) else set()  # e.g. <|sound_bos|>
    specials = (set(tok.all_special_ids) | added) - {tok.convert_tokens_to_ids(lens.adapter.audio_token)}
    valid = (b.inputs["attention_mask"] == 1) & ~torch.isin(ids, torch.tensor(sorted(specials)))
    assert stats.tokens.tolist() == valid.sum(1).tolist()  # counted tokens per emotion (T is per unit since #24)
    for layer in range(lens.n_layers):
        act = ref[f"{layer}.act"]
        for row in range(2):
            assert torch.equal(stats.K[row, layer], (act[row][valid[row]] > 0).sum(0).to(stats.K.dtype))
    auds = [tiny_audio(0.3, freq=190, seed=1), tiny_audio(0.8, freq=260, seed=2)]
    if name in PADDING_SENSITIVE_ENCODER:
        auds[0] = tiny_audio(0.8, freq=190, seed=1)
        b = lens.batch(auds, PROMPTS, sampling_rate=16000)
        assert b.masks.padding.any()  # the prompts still differ in length: the left padding of the text is checked
    full = lens.run(b, logits="all").logits
    for row in range(2):
        one = lens.batch([auds[row]], PROMPTS[row], sampling_rate=16000)
        alone = lens.run(one, logits="all").logits[0]
        assert torch.allclose(full[row][~b.masks.padding[row]], alone, atol=1e-5)


def test_deactivation_and_steering_equal_plain_hook_edits(fam):
    _, _, _, lens, b = fam
    u = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    u[0, [1, 7, 30]] = True
    u[-1, [2, 50]] = True
    last = b.masks.last_token().float().argmax(1)
    base = lens.run(b).logits
    for edit, gain in ((deactivate(u), 0.0), (steer(u, alpha=3.0), 4.0)):
        out = lens.run(b, edits=[edit])
        ref = plain(lens, b, edit=(u, gain))[torch.arange(2), last]
        assert torch.allclose(out.logits, ref, atol=1e-5) and not torch.allclose(out.logits, base, atol=1e-4)
        seq = lens.run(b, edits=[edit], max_new_tokens=4).sequences
        assert torch.equal(seq, plain(lens, b, edit=(u, gain), generate=4))


def test_esn_lens_run_on_a_saved_folder(fam, tmp_path, capsys):
    name, model, proc, lens, b = fam
    if name == "phi4_multimodal":  # the release's layout: base weights + speech-lora/ (PEFT)
        from esn_lens.testing.tiny_families import save_phi4_folder

        save_phi4_folder(model, proc, tmp_path / "m")
    elif name == "granite_speech":  # the release's layout: weights + PEFT files of the speech LoRA side by side
        from esn_lens.testing.tiny_families import save_granite_folder

        save_granite_folder(model, proc, tmp_path / "m")
    else:
        model.save_pretrained(tmp_path / "m")
        proc.save_pretrained(tmp_path / "m")
    loaded = Lens.from_pretrained(str(tmp_path / "m"))
    assert loaded.adapter.name == name and torch.allclose(loaded.run(b).logits, lens.run(b).logits, atol=1e-6)
    corpus = write_tone_corpus(tmp_path / "tones", speakers=4, per_speaker=2)
    rc = run_main(["run", "--model", str(tmp_path / "m"), "--dataset", "manifest", "--data-dir", str(corpus),
                   "--mode", "constrained", "--top-frac", "0.05", "--selector", "mad", "--selector", "random",
                   "--alpha", "2", "--eval-per-emotion", "1", "--bootstrap", "0", "--batch-size", "8", "--threads", "1", "--no-progress",
                   "--out", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert r["model"]["class"] == type(model).__name__ and r["model"]["adapter"] == name


@pytest.mark.parametrize("family,arch", [("music_flamingo", "MusicFlamingoForConditionalGeneration"),
                                         ("glm_asr", "GlmAsrForConditionalGeneration"),
                                         ("qwen2_audio", "Qwen2AudioForConditionalGeneration"),
                                         ("audio_flamingo3", "AudioFlamingo3ForConditionalGeneration")])
def test_transformer_bridge_matches_the_hf_path(family, arch):
    """TransformerLens 4.3 ships bridges for these audio-language models: statistics and an edited forward equal the
    plain model's."""
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    plain_model, proc = build_tiny(family, seed=3)
    twin, proc2 = build_tiny(family, seed=3)  # the bridge rewrites its model in place
    bridge = build_bridge_from_module(twin, arch, hf_config=twin.config, tokenizer=proc2.tokenizer)
    plain, bridged = Lens(plain_model, proc), Lens(bridge, proc2)
    assert bridged.adapter.name == "transformer_bridge" and bridged.adapter.family == family
    auds = [tiny_audio(0.4), tiny_audio(0.7, freq=300)]
    b1, b2 = (lens.batch(auds, PROMPTS, sampling_rate=16000) for lens in (plain, bridged))
    u = torch.zeros(2, 64, dtype=torch.bool)
    u[1, :16] = True
    s1, s2 = plain.new_stats(("a", "b")), bridged.new_stats(("a", "b"))
    o1 = plain.run(b1, stats=s1, emotion_index=torch.tensor([0, 1]), edits=[deactivate(u)])
    o2 = bridged.run(b2, stats=s2, emotion_index=torch.tensor([0, 1]), edits=[deactivate(u)])
    assert torch.equal(s1.K, s2.K) and torch.equal(s1.T, s2.T) and torch.allclose(o1.logits, o2.logits, atol=1e-5)


def test_voxtral_without_mistral_common_says_which_extra(tmp_path, monkeypatch, capsys):
    """Voxtral's prompts need mistral_common: without it, loading and building inputs stop with one line naming
    the extra (and ``esn-lens run`` exits 2 with that line)."""
    import sys

    from esn_lens.errors import UnsupportedModelError

    model, proc = build_tiny("voxtral", seed=2)
    model.save_pretrained(tmp_path / "m")
    proc.save_pretrained(tmp_path / "m")
    lens = Lens(model, proc)
    monkeypatch.setitem(sys.modules, "mistral_common", None)  # import mistral_common now raises ImportError
    with pytest.raises(UnsupportedModelError, match=r'pip install "esn-lens\[voxtral\]"'):
        lens.batch([tiny_audio(0.3)], "Which emotion?", sampling_rate=16000)
    with pytest.raises(UnsupportedModelError, match=r'esn-lens\[voxtral\]'):
        Lens.from_pretrained(str(tmp_path / "m"))
    rc = run_main(["run", "--model", str(tmp_path / "m"), "--dataset", "manifest", "--data-dir",
                   str(write_tone_corpus(tmp_path / "tones", speakers=2, per_speaker=1)), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and 'pip install "esn-lens[voxtral]"' in err[-1], err


def test_phi4_speech_lora_is_on_with_audio_and_off_without():
    """Phi-4-multimodal's speech LoRA changes the decoder: the adapter runs it for audio inputs (logits equal the root
    with every PEFT layer on, not off) and not for text-only ones (equal the root with every layer off)."""
    model, proc = build_tiny("phi4_multimodal", seed=0)
    lens = Lens(model, proc)
    lora = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "enable_adapters")]
    assert lens.adapter.has_speech_lora and len(lora) == 4 * lens.n_layers  # qkv, o, gate_up, down per layer

    def root_logits(batch, on):
        for m in lora:
            m.enable_adapters(on)
        with torch.no_grad():
            return model(**batch.inputs).logits[:, -1]

    audio = lens.batch([tiny_audio(0.5), tiny_audio(0.9, freq=300)], PROMPTS, sampling_rate=16000)
    text = lens.batch(None, PROMPTS)
    for batch, on in ((audio, True), (text, False)):
        got = lens.run(batch).logits
        assert torch.allclose(got, root_logits(batch, on), atol=1e-6)
        assert not torch.allclose(got, root_logits(batch, not on), atol=1e-3)


def test_phi4_without_peft_says_which_extra(tmp_path, monkeypatch):
    """A Phi-4-multimodal folder with its speech-lora/ needs peft: without it, loading stops with one line naming
    the extra (never a silent run without the LoRA)."""
    import sys

    from esn_lens.errors import UnsupportedModelError
    from esn_lens.testing.tiny_families import save_phi4_folder

    model, proc = build_tiny("phi4_multimodal", seed=0)
    save_phi4_folder(model, proc, tmp_path / "m")
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(UnsupportedModelError, match=r'pip install "esn-lens\[phi4\]"'):
        Lens.from_pretrained(str(tmp_path / "m"))
