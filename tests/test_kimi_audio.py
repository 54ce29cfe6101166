"""Kimi-Audio end to end on the tiny stand-in (its own forward and module tree, loaded as remote code).

References are the model's own forward at batch size 1 (its embedding path: two streams, features through
``vq_adaptor``) with plain torch hooks, and inputs built by the stand-in prompt manager directly.
"""
from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from esn_lens import deactivate, steer
from esn_lens.adapters.kimi_audio import KimiaPrompter
from esn_lens.errors import InputError
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny, tiny_audio
from esn_lens.testing.kimia_toolkit import KIMIA_TOKENS, write_stand_in_toolkit
from pipeline_assets import run_main, write_tone_corpus

PROMPTS = ["Which emotion is it?", "Name the emotion", "Emotion?"]


@pytest.fixture(scope="module")
def kimi(tmp_path_factory):
    model, proc = build_tiny("kimi_audio", seed=0)
    tmp = tmp_path_factory.mktemp("kimi")
    auds = [tiny_audio(0.3 + 0.25 * i, freq=180 + 70 * i, seed=i) for i in range(3)]
    wavs = []
    for i, a in enumerate(auds):
        wavs.append(str(tmp / f"c{i}.wav"))
        sf.write(wavs[-1], a, 16000, subtype="FLOAT")
    folder = tmp / "tiny_kimia"
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return SimpleNamespace(model=model, proc=proc, lens=Lens(model, proc), auds=auds, wavs=wavs, folder=folder, tmp=tmp)


@pytest.fixture
def toolkit(kimi):
    """The stand-in ``kimia_infer`` importable for one test (then forgotten again)."""
    path = write_stand_in_toolkit(str(kimi.tmp / "toolkit"))
    sys.path.insert(0, path)
    yield
    sys.path.remove(path)
    for name in [m for m in sys.modules if m == "kimia_infer" or m.startswith("kimia_infer.")]:
        del sys.modules[name]


def alone(kimi, i):
    """Row i's inputs straight from the prompt manager (question, then clip), as the toolkit builds them."""
    msgs = [{"role": "user", "message_type": "text", "content": PROMPTS[i]},
            {"role": "user", "message_type": "audio", "content": kimi.wavs[i]}]
    content = kimi.proc.source.get_prompt(msgs, output_type="text")
    a, t, c = content.to_tensor()
    return dict(input_ids=a, text_input_ids=t, is_continuous_mask=c, whisper_input_feature=content.continuous_feature)


def hooked(module, fn):
    return module.register_forward_hook(lambda m, i, o: fn(o))


def own_forward(kimi, i, units=None, gain=0.0, capture=None):
    """The model's own forward on row i alone; ``units`` scaled by ``gain`` at act_fn; ``capture`` layer -> act."""
    handles = []
    for layer, mlp in enumerate(kimi.model.model.layers):
        def fn(o, layer=layer):
            if units is not None:
                o = o.clone()
                o[..., units[layer]] *= gain
            if capture is not None:
                capture[layer] = o.detach().clone()
            return o
        handles.append(hooked(mlp.mlp.act_fn, fn))
    try:
        with torch.no_grad():
            return kimi.model(**alone(kimi, i))
    finally:
        for h in handles:
            h.remove()


def units_of(lens, idx):
    u = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    for layer, n in idx:
        u[layer, n] = True
    return u


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_every_row_equals_that_row_alone(kimi, padding_side):
    b = kimi.lens.batch(kimi.auds, PROMPTS, sampling_rate=16000, padding_side=padding_side)
    out = kimi.lens.run(b, logits="all")
    for i in range(3):
        ref = own_forward(kimi, i)
        audio_logits, text_logits = ref.logits  # the model's pair: answers come from the text logits
        keep = ~b.masks.padding[i]
        assert torch.allclose(out.logits[i][keep], text_logits[0], atol=1e-5)
        c = alone(kimi, i)
        assert int(b.masks.audio[i].sum()) == int(c["is_continuous_mask"].sum()) == int(np.ceil(kimi.auds[i].size / 1280))
        n_prompt = len(kimi.proc.tokenizer(PROMPTS[i], add_special_tokens=False).input_ids)
        assert int(b.masks.prompt_text[i].sum()) == n_prompt
        assert int(b.masks.special[i].sum()) == int(keep.sum()) - n_prompt - int(b.masks.audio[i].sum())


def test_sites_and_stats_equal_plain_hooks(kimi):
    lens = kimi.lens
    b = lens.batch(kimi.auds, PROMPTS, sampling_rate=16000)
    vals = {"pre": [], "act": []}
    with lens.trace(b):
        for layer in range(2):  # forward order; a loop, not a comprehension (nnsight keeps loop-saved values)
            for s in ("pre", "act"):
                vals[s].append(lens.blocks[layer].mlp.site(s).output.save())
        post = lens.blocks[1].mlp.hook_post.output.save()
        resid = lens.blocks[1].hook_resid_post.output.save()
        logits = lens.logits.save()
    stats = lens.new_stats(["angry", "happy"])
    lens.run(b, stats=stats, emotion_index=torch.tensor([0, 1, 0]), logits="none")
    K = torch.zeros(2, 2, lens.d_mlp)
    T = torch.zeros(2)
    specials = set(kimi.proc.tokenizer.all_special_ids) | {kimi.proc.tokenizer.convert_tokens_to_ids(t)
                                                           for t in KIMIA_TOKENS.values()}
    for i, e in enumerate([0, 1, 0]):
        cap, grabbed = {}, {}
        mods = kimi.model.model.layers
        hs = [mods[1].mlp.down_proj.register_forward_pre_hook(lambda m, a: grabbed.__setitem__("post", a[0].clone())),
              mods[1].register_forward_hook(lambda m, a, o: grabbed.__setitem__("resid", o.clone())),
              mods[0].mlp.gate_proj.register_forward_hook(lambda m, a, o: grabbed.__setitem__("pre0", o.clone()))]
        ref = own_forward(kimi, i, capture=cap)
        for h in hs:
            h.remove()
        keep = ~b.masks.padding[i]
        for layer in range(2):
            assert torch.allclose(vals["act"][layer][i][keep], cap[layer][0], atol=1e-5)
        assert torch.allclose(vals["pre"][0][i][keep], grabbed["pre0"][0], atol=1e-5)
        assert torch.allclose(post[i][keep], grabbed["post"][0], atol=1e-5)
        assert torch.allclose(resid[i][keep], grabbed["resid"][0], atol=1e-5)
        assert torch.allclose(logits[i][keep], ref.logits[1][0], atol=1e-5)
        c = alone(kimi, i)
        valid = c["is_continuous_mask"][0] | ~torch.isin(c["text_input_ids"][0], torch.tensor(sorted(specials)))
        T[e] += valid.sum()
        for layer in range(2):
            K[e, layer] += (cap[layer][0][valid] > 0).sum(0)
    assert torch.equal(stats.tokens.float(), T) and torch.equal(stats.K.float(), K)


def test_deactivation_and_steering_equal_plain_hook_edits(kimi):
    lens = kimi.lens
    b = lens.batch(kimi.auds, PROMPTS, sampling_rate=16000)
    u = units_of(lens, [(0, 3), (0, 17), (1, 5), (1, 40)])
    for edit, gain in ((deactivate(u), 0.0), (steer(u, alpha=3.0), 4.0)):
        out = lens.run(b, edits=[edit])
        base = lens.run(b)
        assert not torch.allclose(out.logits, base.logits, atol=1e-4)  # the edit matters
        for i in range(3):
            ref = own_forward(kimi, i, units=u, gain=gain).logits[1][0, -1]
            assert torch.allclose(out.logits[i], ref, atol=1e-5)


def own_generate(kimi, i, units, gain, steps):
    """The toolkit's text loop on row i alone: argmax of the text logits into the text stream, a blank into the
    audio stream, the model's own forward with its cache; ``units`` scaled by ``gain`` at every step."""
    x = kimi.proc.extra_tokens
    def scaled(o, layer):
        o = o.clone()
        o[..., units[layer]] *= gain
        return o

    handles = [hooked(layer.mlp.act_fn, lambda o, li=li: scaled(o, li)) for li, layer in enumerate(kimi.model.model.layers)]
    try:
        inp, new, done = alone(kimi, i), [], False
        P = inp["input_ids"].shape[1]
        with torch.no_grad():
            a_logits, t_logits, cache = kimi.model(**inp, position_ids=torch.arange(P)[None], return_dict=False)
            for k in range(steps):
                nxt = x.kimia_text_blank if done else int(t_logits[0, -1].argmax())
                done = done or nxt == x.kimia_text_eos
                new.append(nxt)
                a_logits, t_logits, cache = kimi.model(
                    input_ids=torch.tensor([[x.kimia_text_blank]]), text_input_ids=torch.tensor([[nxt]]),
                    position_ids=torch.tensor([[P + k]]), past_key_values=cache, use_cache=True, return_dict=False)
    finally:
        for h in handles:
            h.remove()
    return new


def test_generation_equals_the_toolkit_loop_with_hooks(kimi):
    lens = kimi.lens
    b = lens.batch(kimi.auds, PROMPTS, sampling_rate=16000)
    u = units_of(lens, [(0, 3), (1, 5), (1, 40)])
    out = lens.run(b, edits=[steer(u, alpha=3.0)], max_new_tokens=5)
    P = b.inputs["input_ids"].shape[1]
    assert out.sequences.shape == (3, P + 5)
    assert torch.equal(out.sequences[:, :P], b.inputs["text_input_ids"])  # the text stream, continued
    for i in range(3):
        assert out.sequences[i, P:].tolist() == own_generate(kimi, i, u, 4.0, 5)
    plain = lens.run(b, max_new_tokens=5).sequences
    assert plain[:, P:].tolist() == [own_generate(kimi, i, u, 1.0, 5) for i in range(3)]


def test_layout_and_callable_prompter(kimi):
    lens = kimi.lens
    assert lens.n_layers == kimi.model.config.num_hidden_layers == 2 and len(kimi.model.model.mimo_layers) == 1
    paths = [lens.adapter.site_path(layer, s)[0] for layer in range(2) for s in ("pre", "act", "post")]
    assert not any("mimo" in p for p in paths) and lens.adapter.lm_head_path.endswith("lm_head")
    src = kimi.proc.source
    other = Lens(kimi.model, KimiaPrompter(lambda msgs: src.get_prompt(msgs), tokenizer=src.text_tokenizer,
                                           extra_tokens=src.extra_tokens))
    b1 = lens.batch(kimi.auds[:2], PROMPTS[:2], sampling_rate=16000)
    b2 = other.batch(kimi.auds[:2], PROMPTS[:2], sampling_rate=16000)
    assert b1.inputs.keys() == b2.inputs.keys() and all(torch.equal(b1.inputs[k], b2.inputs[k]) for k in b1.inputs)
    bad = Lens(kimi.model, KimiaPrompter(lambda msgs: {"audio_ids": [1, 2], "text_ids": [1], "is_continuous_mask": [0, 0],
                                                       "features": None}, tokenizer=src.text_tokenizer,
                                         extra_tokens=src.extra_tokens))
    with pytest.raises(InputError, match="differ in length"):
        bad.batch(None, "x")


def test_without_the_toolkit_one_line_names_the_install(kimi):
    lens = Lens.from_pretrained(str(kimi.folder), trust_remote_code=True)
    assert type(lens.model).__name__ == "MoonshotKimiaForCausalLM" and lens.adapter.name == "kimi_audio"
    with pytest.raises(InputError, match="pip install git\\+https://github.com/MoonshotAI/Kimi-Audio"):
        lens.batch([kimi.auds[0]], "x", sampling_rate=16000)


def test_esn_lens_run_on_a_saved_folder_with_remote_code(kimi, toolkit, tmp_path, capsys):
    loaded = Lens.from_pretrained(str(kimi.folder), trust_remote_code=True)
    b = loaded.batch(kimi.auds, PROMPTS, sampling_rate=16000)
    assert torch.allclose(loaded.run(b).logits, kimi.lens.run(b).logits, atol=1e-6)  # the toolkit path, reloaded
    corpus = write_tone_corpus(tmp_path / "tones", speakers=4, per_speaker=2)
    model, proc = build_tiny("kimi_audio", seed=2)  # random weights that answer >= 1 clip of every emotion correctly
    model.save_pretrained(tmp_path / "m")
    proc.save_pretrained(tmp_path / "m")
    out = tmp_path / "run"
    rc = run_main(["run", "--model", str(tmp_path / "m"), "--trust-remote-code", "--dataset", "manifest", "--data-dir",
                   str(corpus), "--mode", "constrained", "--top-frac", "0.05", "--selector", "mad", "--selector",
                   "random", "--alpha", "2", "--eval-per-emotion", "1", "--bootstrap", "0", "--batch-size", "8", "--threads", "1",
                   "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    r = json.loads((out / "results.json").read_text())
    assert r["model"]["class"] == "MoonshotKimiaForCausalLM" and r["model"]["adapter"] == "kimi_audio"
    assert r["selectors"]["mad"]["counts"] == {e: round(0.05 * 128) for e in ("neutral", "happy", "sad", "angry")}
    assert os.path.exists(out / "report.html")


def test_generate_mode_answers_are_the_decoded_text_stream(kimi):
    from esn_lens.data.clip import EmotionClip
    from esn_lens.evaluate import SEREvaluator

    clips = [EmotionClip(f"c{i}", e, audio=a, sampling_rate=16000) for i, (a, e) in enumerate(zip(kimi.auds, ("angry", "sad", "happy")))]
    ev = SEREvaluator(kimi.lens, ("angry", "happy", "sad"), mode="generate", max_new_tokens=4, num_workers=0)
    res = ev.run(clips)["baseline"]
    b = kimi.lens.batch(kimi.auds, [ev.prompt(c).text for c in clips], sampling_rate=16000)
    seq = kimi.lens.run(b, max_new_tokens=4).sequences[:, b.inputs["input_ids"].shape[1]:]
    assert res.answers == kimi.proc.tokenizer.batch_decode(seq, skip_special_tokens=True)
    assert len(res.predictions) == 3


def test_readme_kimi_example_runs(capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if 'build_tiny("kimi_audio")' in b)
    exec(compile(block, "README-kimi", "exec"), {})
    assert capsys.readouterr().out.startswith("[5, 12] torch.Size([2, ")
