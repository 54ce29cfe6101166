"""The open core: inside ``with lens.trace(batch)`` the TransformerLens-named sites are nnsight views whose
values, edits, gradients and patches equal plain torch hooks on the same modules, for every family."""
import pytest
import torch

from conftest import AUDIO_FAMILIES, TEXT_FAMILIES
from esn_lens import NeuronSet, NeuronStats, deactivate, steer
from esn_lens.errors import InputError
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny, tiny_audio

import nnsight  # noqa: E402  (after esn_lens: the jaxtyping/beartype import hook must load first)

FAMILIES = AUDIO_FAMILIES + TEXT_FAMILIES
WITH_BRIDGE = FAMILIES + ("bridge_af3", "bridge_qwen2")
PROMPTS = ["Which emotion is it?", "Name the emotion", "Emotion?"]


def make_batch(lens, n=2, seconds=(0.3, 0.55, 0.8), prompts=PROMPTS, seed=0, labels=None, padding_side="left"):
    audios = None
    if lens.adapter.audio_token is not None:
        audios = [tiny_audio(seconds[i], freq=170 + 60 * i + 13 * seed, seed=i + 10 * seed) for i in range(n)]
    return lens.batch(audios, list(prompts[:n]), sampling_rate=16000, labels=labels, padding_side=padding_side)


def module_of(lens, path):
    return lens.adapter.root().get_submodule(path)


def site_modules(lens, layer):
    """name -> (module, side) from the adapter's paths, for plain hooks."""
    a = lens.adapter
    out = {
        "hook_resid_pre": (module_of(lens, a.layer_path(layer)), "input"),
        "attn": (module_of(lens, a.attn_path(layer)), "output0"),
        "mlp.hook_pre": (module_of(lens, a.site_path(layer, "pre")[0]), "output"),
        "mlp.hook_act": (module_of(lens, a.site_path(layer, "act")[0]), "output"),
        "mlp.hook_post": (module_of(lens, a.site_path(layer, "post")[0]), "input"),
        "mlp": (module_of(lens, a.mlp_path(layer)), "output"),
        "hook_resid_post": (module_of(lens, a.layer_path(layer)), "output0"),
    }
    return out


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def plain_forward(lens, batch, hooks=(), grad=False):
    """Run the root module with plain torch hooks ``(module, side, fn)``; fn returns a replacement or None."""
    handles = []
    for mod, side, fn in hooks:
        if side == "input":
            def pre(m, args, kwargs, fn=fn):
                if args:
                    new = fn(args[0])
                    return None if new is None else ((new, *args[1:]), kwargs)
                k = next(iter(kwargs))
                new = fn(kwargs[k])
                return None if new is None else (args, {**kwargs, k: new})
            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(m, args, out, fn=fn):
                new = fn(_first(out))
                if new is None:
                    return None
                return (new, *out[1:]) if isinstance(out, tuple) else new
            handles.append(mod.register_forward_hook(post))
    try:
        ctx = torch.enable_grad() if grad else torch.no_grad()
        args, kwargs = lens.adapter.call_args(batch.inputs)
        with ctx:
            out = lens.adapter.root()(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return out if isinstance(out, torch.Tensor) else out.logits


BRIDGE_ARCH = {"bridge_af3": ("audio_flamingo3", "AudioFlamingo3ForConditionalGeneration"),
               "bridge_qwen2": ("qwen2", "Qwen2ForCausalLM")}


@pytest.fixture(scope="module")
def lenses():
    cache = {}

    def get(family):
        if family not in cache:
            if family in BRIDGE_ARCH:  # a TransformerLens TransformerBridge around the tiny model
                from transformer_lens.model_bridge.sources import build_bridge_from_module
                fam, arch = BRIDGE_ARCH[family]
                model, proc = build_tiny(fam, seed=0)
                tok = getattr(proc, "tokenizer", proc)
                cache[family] = Lens(build_bridge_from_module(model, arch, hf_config=model.config, tokenizer=tok), proc)
            else:
                model, proc = build_tiny(family, seed=0)
                cache[family] = Lens(model, proc)
        return cache[family]
    return get


@pytest.mark.parametrize("family", WITH_BRIDGE)
def test_every_named_site_equals_a_plain_hook(lenses, family):
    lens = lenses(family)
    batch = make_batch(lens)
    names = ["hook_resid_pre", "attn", "mlp.hook_pre", "mlp.hook_act", "mlp.hook_post", "mlp", "hook_resid_post"]
    saved = {}
    with lens.trace(batch):
        emb = lens.embed.output.save()
        for layer in range(lens.n_layers):
            b = lens.blocks[layer]
            for nm, st in zip(names, [b.hook_resid_pre, b.attn, b.mlp.hook_pre, b.mlp.hook_act, b.mlp.hook_post,
                                       b.mlp, b.hook_resid_post]):
                saved[(layer, nm)] = st.output.save()
        logits = lens.logits.save()
    ref, hooks = {}, []
    for layer in range(lens.n_layers):
        for nm, (mod, side) in site_modules(lens, layer).items():
            hooks.append((mod, side, lambda v, k=(layer, nm): ref.__setitem__(k, v.detach().clone())))
    emb_mod = module_of(lens, lens.adapter.embed_path)
    hooks.append((emb_mod, "output", lambda v: ref.__setitem__("embed", v.detach().clone())))
    ref_logits = plain_forward(lens, batch, hooks)
    assert len(saved) == 7 * lens.n_layers
    for k, v in saved.items():
        assert torch.equal(v, ref[k]), k
    assert torch.equal(emb, ref["embed"])
    assert torch.equal(logits, ref_logits)
    # the residual stream is consistent: resid_post(l) == resid_pre(l+1)
    assert torch.equal(saved[(0, "hook_resid_post")], saved[(1, "hook_resid_pre")])


@pytest.mark.parametrize("family", AUDIO_FAMILIES)
def test_audio_encoder_site_equals_plain_hook(lenses, family):
    lens = lenses(family)
    batch = make_batch(lens)
    with lens.trace(batch):
        enc = lens.audio_encoder.output.save()
    ref = {}
    tower = module_of(lens, lens.adapter.audio_tower_path)
    h = tower.register_forward_hook(lambda m, a, o: ref.__setitem__("x", o.last_hidden_state.detach().clone()))
    try:
        plain_forward(lens, batch)
    finally:
        h.remove()
    assert torch.equal(enc, ref["x"])


UNITS = [3, 17, 40]


@pytest.mark.parametrize("family", WITH_BRIDGE)
@pytest.mark.parametrize("site", ["mlp.hook_act", "mlp.hook_pre", "mlp.hook_post", "hook_resid_post"])
@pytest.mark.parametrize("gain", [0.0, 2.5])
def test_assigning_units_equals_a_plain_hook_edit(lenses, family, site, gain):
    lens = lenses(family)
    batch = make_batch(lens)
    layer = lens.n_layers - 1 if site == "hook_resid_post" else 0
    units = UNITS if site != "hook_resid_post" else [1, 5]
    with lens.trace(batch):
        st = lens.site(f"blocks.{layer}.{site}")
        st.output[..., units] = st.output[..., units] * gain
        logits = lens.logits.save()
    mod, side = site_modules(lens, layer)[site]

    def edit(v):
        v = v.clone()
        v[..., units] = v[..., units] * gain
        return v
    ref = plain_forward(lens, batch, [(mod, side, edit)])
    base = plain_forward(lens, batch)
    assert (logits - ref).abs().max() <= 1e-6
    assert (ref - base).abs().max() > 1e-4  # the edit did something


@pytest.mark.parametrize("family", WITH_BRIDGE)
def test_grad_of_hook_act_equals_autograd(lenses, family):
    lens = lenses(family)
    batch = make_batch(lens)
    target = 7
    with lens.trace(batch):
        act = lens.blocks[1].mlp.hook_act.output
        lp = lens.logits.output[:, -1].log_softmax(-1)[:, target].sum()
        with lp.backward():
            g = act.grad.save()
    lens.model.zero_grad(set_to_none=True)
    holder = {}

    def keep(v):
        v.retain_grad()
        holder["v"] = v
        return None
    mod, side = site_modules(lens, 1)["mlp.hook_act"]
    out = plain_forward(lens, batch, [(mod, side, keep)], grad=True)
    out[:, -1].log_softmax(-1)[:, target].sum().backward()
    lens.model.zero_grad(set_to_none=True)
    assert g.shape == holder["v"].shape
    assert (g - holder["v"].grad).abs().max() <= 1e-5
    assert g.abs().max() > 0


@pytest.mark.parametrize("family", WITH_BRIDGE)
def test_patching_every_layer_reproduces_the_source_and_one_site_equals_plain_hook(lenses, family):
    lens = lenses(family)
    # equal lengths: same prompt length and the same audio duration, different content
    src = make_batch(lens, n=1, seconds=(0.5,), prompts=["Happy voice?"], seed=1)
    tgt = make_batch(lens, n=1, seconds=(0.5,), prompts=["Sad voice?!!"], seed=2)
    assert src.inputs["input_ids"].shape == tgt.inputs["input_ids"].shape
    hs = []
    with lens.trace() as tracer:
        with tracer.invoke(src):
            for layer in range(lens.n_layers):
                hs.append(lens.blocks[layer].hook_resid_post.output)
            src_logits = lens.logits.save()
        with tracer.invoke(tgt):
            for layer in range(lens.n_layers):
                site = lens.blocks[layer].hook_resid_post
                site.output[:] = hs[layer] if site.output is not None else None  # read the target first
            patched = lens.logits.save()
    assert torch.allclose(patched, src_logits, atol=1e-6)
    # one site: layer 0's act units at the last position, source -> target
    with lens.trace() as tracer:
        with tracer.invoke(src):
            v = lens.blocks[0].mlp.hook_act.output[:, -1, UNITS]
        with tracer.invoke(tgt):
            act = lens.blocks[0].mlp.hook_act.output  # reached after the source's value exists
            act[:, -1, UNITS] = v
            one = lens.logits.save()
    captured = {}
    mod, side = site_modules(lens, 0)["mlp.hook_act"]
    plain_forward(lens, src, [(mod, side, lambda x: captured.__setitem__("v", x[:, -1, UNITS].clone()))])

    def put(x):
        x = x.clone()
        x[:, -1, UNITS] = captured["v"]
        return x
    ref = plain_forward(lens, tgt, [(mod, side, put)])
    assert (one - ref).abs().max() <= 1e-6
    assert (ref - plain_forward(lens, tgt)).abs().max() > 1e-5


@pytest.mark.parametrize("family", AUDIO_FAMILIES + ("qwen2",))
def test_invokes_of_different_lengths_equal_separate_runs(lenses, family):
    lens = lenses(family)
    a = make_batch(lens, n=1, seconds=(0.3,), prompts=["Emotion?"], seed=3)
    b = make_batch(lens, n=2, seconds=(0.8, 0.45), prompts=["Which emotion is it, please?", "Name it"], seed=4)
    with lens.trace() as tracer:
        with tracer.invoke(a):
            ha = lens.blocks[1].mlp.hook_act.output[:, -1].save()
            la = lens.logits.output[:, -1].save()
        with tracer.invoke(b):
            lb = lens.logits.output[:, -1].save()
    assert torch.allclose(la, lens.run(a).logits, atol=1e-5)
    assert torch.allclose(lb, lens.run(b).logits, atol=1e-5)
    assert torch.allclose(ha, lens.run(a, record=["blocks.1.mlp.hook_act"]).cache["blocks.1.mlp.hook_act"][:, -1],
                          atol=1e-5)


def _units(lens, idx):
    u = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    for layer, n in idx:
        u[layer, n] = True
    return u


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2"])
def test_library_edits_and_stats_compose_with_user_code_in_one_trace(lenses, family):
    lens = lenses(family)
    batch = make_batch(lens, labels=["angry", "happy"])
    units = _units(lens, [(0, 3), (1, 9), (1, 20)])
    stats = lens.new_stats(["angry", "happy"])
    with lens.trace(batch):
        h = lens.blocks[0].hook_resid_pre.output.save()       # user code first (the model waits here)
        deactivate(units).apply(lens)                          # then a library edit
        stats.record(lens)                                     # and statistics of the edited values
        logits = lens.logits.output[:, -1].save()
    ref_stats = lens.new_stats(["angry", "happy"])
    ref = lens.run(batch, edits=[deactivate(units)], stats=ref_stats, emotion_index=torch.tensor([0, 1]))
    assert torch.equal(logits.float(), ref.logits)
    for name in ("K", "T", "sum", "sumsq", "n_clips"):
        assert torch.equal(getattr(stats, name), getattr(ref_stats, name)), name
    assert stats.K[:, 0, 3].sum() == 0 and stats.K[:, 1, 9].sum() == 0  # the edit happened before recording
    assert h.shape[-1] == lens.model.config.get_text_config().hidden_size
    # a library operation on a site the model already passed is refused, not silently skipped
    with pytest.raises(InputError, match="already ran past"):
        with lens.trace(batch):
            lens.blocks[1].hook_resid_post.output.save()
            deactivate(units).apply(lens)


@pytest.mark.parametrize("family", ["qwen2_audio", "audio_flamingo3", "llama"])
@pytest.mark.parametrize("positions", ["audio", "last", "no_prompt", "mask"])
def test_edit_positions_equal_a_plain_hook(lenses, family, positions):
    lens = lenses(family)
    batch = make_batch(lens)
    if positions == "audio" and lens.adapter.audio_token is None:
        pytest.skip("text model: no audio positions")
    units = _units(lens, [(0, 3), (0, 17), (1, 40)])
    if positions == "mask":
        pos = torch.zeros_like(batch.masks.padding)
        pos[:, -4:-1] = True
    else:
        pos = batch.masks.select(positions)
    assert pos.any()
    with lens.trace(batch):
        steer(units, alpha=3.0, positions=pos if positions == "mask" else positions).apply(lens)
        logits = lens.logits.save()
    hooks = []
    for layer in range(lens.n_layers):
        mod, side = site_modules(lens, layer)["mlp.hook_act"]
        u = units[layer]

        def fn(v, u=u):
            v = v.clone()
            sel = pos[:, :, None] & u[None, None, :]
            return torch.where(sel, v * 4.0, v)
        hooks.append((mod, side, fn))
    ref = plain_forward(lens, batch, hooks)
    assert (logits - ref).abs().max() <= 1e-6
    assert (ref - plain_forward(lens, batch)).abs().max() > 1e-5


@pytest.mark.parametrize("family", ["qwen2_audio", "llama"])
def test_generate_with_a_library_edit_equals_run(lenses, family):
    lens = lenses(family)
    batch = make_batch(lens)
    units = _units(lens, [(0, 3), (1, 9), (1, 20), (0, 50)])
    with lens.generate(batch, max_new_tokens=4) as tracer:
        steer(units, alpha=4.0).apply(lens)
        seq = tracer.result.save()
    ref = lens.run(batch, edits=[steer(units, alpha=4.0)], max_new_tokens=4)
    seq = getattr(seq, "sequences", seq)
    assert torch.equal(seq, ref.sequences)


def test_probe_pools_a_site(lenses):
    lens = lenses("qwen2_audio")
    batch = make_batch(lens)
    with lens.trace(batch):
        last = nnsight.save(lens.probe("blocks.1.hook_resid_post", "last"))
        audio = nnsight.save(lens.probe("blocks.1.hook_resid_post", "mean_audio"))
        full = lens.blocks[1].hook_resid_post.output.save()
    m = batch.masks.select("audio").float()
    assert torch.allclose(audio.value, (full * m[..., None]).sum(1) / m.sum(1, keepdim=True), atol=1e-6)
    assert torch.equal(last.value, full[:, -1])  # left padding: the last position is the last token


def test_stop_skip_and_clear_errors(lenses):
    lens = lenses("qwen2")
    batch = make_batch(lens)
    with lens.trace(batch) as tracer:
        h0 = lens.blocks[0].hook_resid_post.output.save()
        tracer.stop()
    assert h0.shape[0] == 2
    with lens.trace(batch):  # skip layer 1: its output is its input
        pre = lens.blocks[1].hook_resid_pre.output.save()
        lens.blocks[1].hook_resid_post.skip(pre)
        out = lens.blocks[1].hook_resid_post.output.save()
    assert torch.equal(out, pre)
    with pytest.raises(InputError, match="inside `with lens.trace"):
        deactivate(_units(lens, [(0, 1)])).apply(lens)
    with pytest.raises(InputError, match="unknown site name"):
        lens.site("blocks.0.mlp.hook_nope")
    with pytest.raises(InputError, match="out of range"):
        lens.site("blocks.9.hook_resid_post")
    with pytest.raises(InputError, match="remote"):
        lens.trace(batch, remote=True)
    ns = NeuronSet.from_indices(("angry", "happy"), {"angry": [(0, 1)], "happy": [(1, 2)]}, lens.n_layers, lens.d_mlp)
    with pytest.raises(InputError, match="one set per emotion"):
        deactivate(ns)
    assert deactivate(ns["angry"]).units.sum() == 1 and deactivate(ns.all_units()).units.sum() == 2
    assert lens.site_names()[0] == "hook_embed" and lens.site_names()[-1] == "logits"


def test_the_trace_leaves_no_hooks_behind(lenses):
    lens = lenses("qwen2_audio")
    batch = make_batch(lens)
    mods = [m for m in lens.model.modules()]
    with lens.trace(batch):
        deactivate(_units(lens, [(0, 1), (1, 2)])).apply(lens)
        lens.probe("blocks.0.mlp.hook_act")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in mods)
    assert lens.nn.states == []


def test_inference_mode_option(lenses):
    lens = lenses("qwen2")
    batch = make_batch(lens)
    with lens.trace(batch, inference=True):
        a = lens.blocks[0].mlp.hook_act.output.save()
    with lens.trace(batch):
        b = lens.blocks[0].mlp.hook_act.output.save()
    assert a.is_inference() and not b.is_inference() and b.requires_grad
    assert torch.equal(a, b.detach())


# ---------------------------------------------------------------------- attribution patching and activation patching
def _clips(n_per=2, emotions=("angry", "happy", "neutral", "sad")):
    from esn_lens.data import EmotionClip
    out = []
    for i in range(n_per * len(emotions)):
        out.append(EmotionClip(f"c{i}", emotions[i % len(emotions)], audio=tiny_audio(0.3 + 0.07 * i, freq=150 + 25 * i, seed=i),
                               sampling_rate=16000, text=f"utterance number {i}"))
    return out


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2"])
def test_atp_equals_a_plain_autograd_loop(lenses, family):
    from esn_lens import SEREvaluator, collect_attribution, find_neurons, score
    from esn_lens.attribution import emotion_option_ids, option_margin
    lens = lenses(family)
    emotions = ["angry", "happy", "neutral", "sad"]
    clips = _clips()
    ev = SEREvaluator(lens, emotions, mode="constrained")
    flags = [p.requires_grad for p in lens.model.parameters()]
    att = collect_attribution(lens, clips, emotions, evaluator=ev, batch_size=3, progress=False)
    assert flags == [p.requires_grad for p in lens.model.parameters()]  # restored
    assert att.n_clips.tolist() == [2.0, 2.0, 2.0, 2.0]
    # reference: one clip at a time, plain hooks + torch.autograd, loops over positions
    ref = torch.zeros(4, lens.n_layers, lens.d_mlp, dtype=torch.float64)
    for c in clips:
        p = ev.prompt(c)
        b = lens.batch_clips([c], [p.text])
        acts = {}
        hooks = []
        for layer in range(lens.n_layers):
            mod, side = site_modules(lens, layer)["mlp.hook_act"]
            def keep(v, layer=layer):
                v.retain_grad()
                acts[layer] = v
            hooks.append((mod, side, keep))
        logits = plain_forward(lens, b, hooks, grad=True)
        if c is clips[0]:
            assert all(p.grad is None for p in lens.model.parameters())  # collect_attribution left no weight grads
        e = emotions.index(c.emotion)
        opt = torch.tensor([[ev._option_token_ids()[p.options.index(x)] for x in emotions]])
        lp = logits[0, -1].log_softmax(-1)[opt[0]]
        metric = lp[e] - (lp.sum() - lp[e]) / 3
        metric.backward()
        valid = b.masks.valid[0]
        for layer in range(lens.n_layers):
            a, g = acts[layer][0], acts[layer].grad[0]
            for pos in range(a.shape[0]):
                if valid[pos]:
                    ref[e, layer] += (a[pos] * g[pos]).double()
        lens.model.zero_grad(set_to_none=True)
    assert torch.allclose(att.sum, ref, rtol=1e-4, atol=1e-6)
    assert att.sum.abs().max() > 1e-4
    scores = score(att, "atp")
    assert torch.equal(scores, ref / 2) or torch.allclose(scores, ref / 2, rtol=1e-4, atol=1e-6)
    ns = find_neurons(att, "atp", count=3)
    top = torch.topk((ref[0] / 2).flatten(), 3).indices
    assert set(ns["angry"].flatten().nonzero()[:, 0].tolist()) == set(top.tolist())
    with pytest.raises(InputError, match="attribution statistics"):
        score(lens.new_stats(emotions), "atp")


def test_option_margin_known_values():
    from esn_lens.attribution import option_margin
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    m = option_margin(logits, torch.tensor([[0, 1, 2]]), torch.tensor([1]))
    expected = float(torch.log(torch.tensor(0.25)) - (torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.125))) / 2)
    assert abs(float(m[0]) - expected) < 1e-6


@pytest.mark.parametrize("family", ["qwen2_audio", "audio_flamingo3"])
@pytest.mark.parametrize("align", ["last", "audio"])
def test_patch_activations_equals_a_plain_hook_reference(lenses, family, align):
    from esn_lens import patch_activations
    lens = lenses(family)
    src = make_batch(lens, n=1, seconds=(0.7,), prompts=["Happy voice, please?"], seed=5)
    tgt = make_batch(lens, n=1, seconds=(0.4,), prompts=["Sad?"], seed=6)
    units = [2, 9, 33]
    got = patch_activations(lens, src, tgt, "blocks.0.mlp.hook_act", units=units, align=align)
    mod, side = site_modules(lens, 0)["mlp.hook_act"]
    cap = {}
    plain_forward(lens, src, [(mod, side, lambda v: cap.__setitem__("v", v.clone()))])
    s_pos = (src.masks.select("audio") if align == "audio" else src.masks.last_token())[0].nonzero()[:, 0]
    t_pos = (tgt.masks.select("audio") if align == "audio" else tgt.masks.last_token())[0].nonzero()[:, 0]
    pick = [int(s_pos[(i * len(s_pos)) // len(t_pos)]) for i in range(len(t_pos))]  # a plain loop over positions

    def put(v):
        v = v.clone()
        for j, t in enumerate(t_pos.tolist()):
            for u in units:
                v[0, t, u] = cap["v"][0, pick[j], u]
        return v
    ref = plain_forward(lens, tgt, [(mod, side, put)])[:, -1]
    assert (got - ref).abs().max() <= 1e-5
    assert (ref - plain_forward(lens, tgt)[:, -1]).abs().max() > 1e-6
    with pytest.raises(InputError, match="out of range"):
        patch_activations(lens, src, tgt, "blocks.0.mlp.hook_act", units=[10_000])


def test_generation_steps_through_tracer_iter_equal_plain_hooks(lenses):
    lens = lenses("qwen2")
    batch = make_batch(lens)
    steps: list = []
    with lens.generate(batch, max_new_tokens=3) as tracer:
        for step in tracer.iter[0:3]:
            steps.append(lens.blocks[1].mlp.hook_act.output[:, -1].save())
        seq = tracer.result.save()
    seq = getattr(seq, "sequences", seq)
    captured = []
    mod, _ = site_modules(lens, 1)["mlp.hook_act"]
    h = mod.register_forward_hook(lambda m, a, o: captured.append(o[:, -1].detach().clone()))
    try:
        with torch.no_grad():
            ref = lens.adapter.root().generate(**batch.inputs, max_new_tokens=3, do_sample=False,
                                               pad_token_id=lens.tokenizer.pad_token_id)
    finally:
        h.remove()
    assert torch.equal(seq, ref)
    assert len(steps) == 3 and all(torch.equal(a, b) for a, b in zip(steps, captured[:3]))
