"""Bug 1 of issue 22: every library operation, at every site kind, called at any point of a trace, either does exactly
what it does when called first, or refuses with one line naming the site -- never a silent change. Checked on a tiny
real Qwen2-Audio model, in one invoke and in the first of two invokes."""
import functools

import pytest
import torch

from esn_lens import add, deactivate, mean_ablate, steer
from esn_lens.errors import InputError
from esn_lens.interventions import FunctionEdit
from esn_lens.lens import Lens
from esn_lens.recorders import cache_hooks
from esn_lens.testing import build_tiny, tiny_audio

import nnsight  # noqa: E402,F401

EDITS = ("steer", "deactivate", "mean_ablate", "add", "function")
NEURON_SITES = ("pre", "act", "post")
KINDS = ("hook_embed", "audio_encoder", "blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.0.mlp.hook_pre",
         "blocks.0.mlp.hook_act", "blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post",
         "logits")
WHEN = ("before", "after_same", "after_later")


@functools.lru_cache(maxsize=None)
def _setup():
    model, proc = build_tiny("qwen2_audio")
    lens = Lens(model, proc)
    audios = [tiny_audio(s, freq=170 + 60 * i, seed=i) for i, s in enumerate((0.3, 0.55))]
    a = lens.batch(audios, ["Which emotion is it?", "Name it"], sampling_rate=16000, labels=["angry", "sad"])
    b = lens.batch([tiny_audio(0.4, freq=300, seed=7)], ["Emotion?"], sampling_rate=16000, labels=["sad"])
    stats = lens.new_stats(["angry", "sad"])
    lens.run(a, stats=stats, emotion_index=torch.tensor([0, 1]), logits="none")
    return lens, a, b, stats


def _units(lens):
    u = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    u[0, [1, 4, 6]] = True
    return u


def _operation(kind: str, site: str):
    """``apply(lens, box)`` attaching the operation inside a trace and ``result(box)`` giving what it produced
    (logits for edits, the sums for statistics, the recorded value for probes and caches)."""
    lens, _a, _b, ref_stats = _setup()
    if kind in EDITS:
        short = site.rsplit("hook_", 1)[1]
        edit = {"steer": lambda u: steer(u, alpha=3.0, site=short),
                "deactivate": lambda u: deactivate(u, site=short),
                "mean_ablate": lambda u: mean_ablate(u, ref_stats, site=short),
                "add": lambda u: add(u, 0.7, site=short),
                "function": lambda u: FunctionEdit(u, site=short, fn=lambda v, layer, m: v * -2.0)}[kind](_units(lens))
        return (lambda lens, box: edit.apply(lens)), (lambda box: box["logits"])
    if kind == "stats":
        st = lens.new_stats(["angry", "sad"], site=site.rsplit("hook_", 1)[1])

        def result(box):
            return torch.stack([st.K, st.sum, st.sumsq]).clone(), st.T.clone()
        return (lambda lens, box: st.record(lens)), result
    if kind == "probe":
        return (lambda lens, box: box.__setitem__("rec", lens.probe(site, "none" if site == "audio_encoder" else "mean"))), (lambda box: box["rec"].value)
    if kind == "cache":
        def apply(lens, box):
            box["cache"] = {}
            lens.attach(lambda _m, sc: cache_hooks([lens.site(site)], box["cache"], {site}, None, sc))
        return apply, (lambda box: box["cache"].get(site))
    raise AssertionError(kind)


def _later(lens, site: str) -> str | None:
    names = lens.site_names()
    i = names.index(site)
    return names[i + 1] if i + 1 < len(names) else None


def _run(kind: str, site: str, when: str | None, invokes: int):
    """The operation's result with the site (or a later one) read ``when`` (None: the operation first, nothing read)."""
    lens, a, b, _ = _setup()
    apply, result = _operation(kind, site)
    box: dict = {}
    read = {"before": None, "after_same": site, "after_later": _later(lens, site)}.get(when)

    def body():
        if read is not None:
            box["read"] = lens.site(read).output.save()
        apply(lens, box)
        if when == "before":
            box["read"] = lens.site(site).output.save()

    if invokes == 1:
        with lens.trace(a):
            body()
            box["logits"] = lens.logits.output.save()
    else:
        with lens.trace() as tracer:
            with tracer.invoke(a):
                body()
                box["logits"] = lens.logits.output.save()
            with tracer.invoke(b):
                box["other"] = lens.logits.output.save()
    return result(box)


def _equal(x, y) -> bool:
    if isinstance(x, tuple):
        return all(_equal(p, q) for p, q in zip(x, y))
    return x is not None and y is not None and torch.equal(x.float(), y.float())


CASES = ([(k, f"blocks.0.mlp.hook_{s}") for k in EDITS + ("stats",) for s in NEURON_SITES]
         + [(k, s) for k in ("probe", "cache") for s in KINDS])


@pytest.mark.parametrize("invokes", [1, 2])
@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("kind,site", CASES)
def test_operation_called_anywhere_equals_called_first_or_refuses(kind, site, when, invokes):
    lens = _setup()[0]
    if when == "after_later" and _later(lens, site) is None:
        pytest.skip("no later site")
    first = _run(kind, site, None, invokes)
    if kind in ("probe", "cache", "stats"):  # the operation did record something
        assert first is not None and (not isinstance(first, tuple) or float(first[0].abs().sum()) > 0)
    try:
        got = _run(kind, site, when, invokes)
    except InputError as e:
        assert when != "before", f"refused although called before its site: {e}"
        msg = str(e)
        assert "\n" not in msg and msg.startswith(site + ":"), msg
        return
    assert _equal(got, first), f"{kind} at {site} called {when}: silently different from the operation called first"


def test_refusal_leaves_no_partial_effect():
    """A refused stats.record adds nothing (no token counts without sums): the attach is all or none."""
    lens, a, _b, _ = _setup()
    st = lens.new_stats(["angry", "sad"])
    box = {}
    with pytest.raises(InputError, match="blocks.0.mlp.hook_act"):
        with lens.trace(a):
            box["x"] = lens.blocks[0].mlp.hook_act.output.save()
            st.record(lens)
    assert float(st.T.sum()) == 0 and float(st.sum.abs().sum()) == 0
    assert lens.nn.states == []
