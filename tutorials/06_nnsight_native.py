# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # nnsight-native interpretability: probes, patching, attribution, edits and gradients
#
# `with lens.trace(batch) as tracer:` *is* nnsight's tracer. Inside it the model's sites carry TransformerLens
# names (`lens.blocks[l].mlp.hook_act`, `hook_pre`, `hook_post`, `lens.blocks[l].hook_resid_pre`,
# `hook_resid_post`, `attn`, `mlp`, `lens.embed`, `lens.audio_encoder`, `lens.logits`); each has `.output`,
# `.save()` and assignment. The library's operations (`edit.apply(lens)`, `stats.record(lens)`,
# `lens.probe(...)`) run inside the same trace, next to your own nnsight code.
#
# Five short recipes, each a few lines of user code with a checked result:
#
# a. a linear probe on residual-stream activations,
# b. a happy -> sad activation patch (`patch_activations`, and the same in plain nnsight with two invokes),
# c. an attribution-patching (AtP) ranking of MLP neurons,
# d. an intervention in plain nnsight next to the same library edit, with equal logits,
# e. a gradient of a logit with respect to a neuron site.
#
# nnsight rules to keep in mind: a name bound inside the trace and not `.save()`d is gone afterwards (append to
# a container made before the `with`, or use `nnsight.save`); read sites in forward order; library operations
# go *before* the sites they act on are read.

# %%
import os

import torch

from esn_lens import Lens, collect_attribution, deactivate, find_neurons, patch_activations
from esn_lens.data import EmotionClip
from esn_lens.testing import build_planted, build_tiny, planted_clips, tiny_audio

import nnsight  # noqa: E402  (import nnsight after esn_lens)

torch.set_num_threads(int(os.environ.get("ESN_LENS_THREADS", "1")))
torch.manual_seed(0)
EMOTIONS = ("angry", "happy", "neutral", "sad")
PROMPT = "What emotion does the speaker express?"

# %% [markdown]
# Two tiny real models: a Qwen2-Audio with random weights (audio positions, for probes and edits) and the
# planted-unit Qwen2 (text clips; layer 1 holds four known units per emotion that write that emotion's answer
# logit), where patching and attribution have a known right answer.

# %%
lens = Lens(*build_tiny("qwen2_audio", seed=0))
# audio clips (made in recipe a) have a pitch that depends on the emotion: the random-weight model has something to pick up
p_model, p_tok, planted = build_planted(EMOTIONS)
plens = Lens(p_model, p_tok)
print(lens, plens, sep="\n")

# %% [markdown]
# ## a. A linear probe on the residual stream
# `lens.probe(site, pooling)` records a site's value pooled over positions (here: the mean over each clip's
# audio tokens), as a (batch, hidden) tensor after the trace. Six batches, then a logistic regression in torch,
# trained on 32 clips and scored on 16 held-out clips. A probe's *training* accuracy proves little: with 32
# features and few clips a linear probe can fit almost any labels. So we also train it on shuffled labels (the
# control): a real probe beats chance (25 %) on held-out clips, the control does not.
#
# **What to expect**: held-out accuracy 1.00 with the true labels, about 0.3 with shuffled labels (mean of 5).

# %%
clips = [EmotionClip(f"c{i}", EMOTIONS[i % 4], audio=tiny_audio(0.4, freq=150 + 120 * (i % 4), seed=i),
                     sampling_rate=16000) for i in range(48)]
feats, ys = [], []
for i in range(0, len(clips), 8):
    with lens.trace(lens.batch_clips(clips[i:i + 8], PROMPT)):
        rec = nnsight.save(lens.probe("blocks.1.hook_resid_post", "mean_audio"))
    feats.append(rec.value)
    ys += [EMOTIONS.index(c.emotion) for c in clips[i:i + 8]]
X, y = torch.cat(feats), torch.tensor(ys)
train, test = torch.arange(len(y)) < 32, torch.arange(len(y)) >= 32
X = (X - X[train].mean(0)) / (X[train].std(0) + 1e-6)  # standardised with the training clips' statistics


def fit_probe(labels: torch.Tensor) -> tuple[float, float]:
    """Train a linear probe on the training clips with ``labels``; (train accuracy, held-out accuracy)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(X.shape[1], len(EMOTIONS))
    opt = torch.optim.Adam(linear.parameters(), lr=0.05, weight_decay=1e-2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(linear(X[train]), labels).backward()
        opt.step()
    with torch.no_grad():
        return ((linear(X[train]).argmax(1) == labels).float().mean().item(),
                (linear(X[test]).argmax(1) == y[test]).float().mean().item())


train_acc, held_out_acc = fit_probe(y[train])
g = torch.Generator().manual_seed(1)
control = [fit_probe(y[train][torch.randperm(int(train.sum()), generator=g)])[1] for _ in range(5)]
print(f"probe on blocks.1.hook_resid_post (mean over audio): X {tuple(X.shape)}, train accuracy {train_acc:.2f}, "
      f"held-out accuracy {held_out_acc:.2f}; shuffled-label control held-out {sum(control) / len(control):.2f}")
assert held_out_acc >= 0.75 and sum(control) / len(control) < 0.5  # chance is 0.25

# %% [markdown]
# ## b. Activation patching: happy -> sad
# Take layer 1's neuron activations (`hook_act`) at the last token of a *happy* clip and write them into a
# *sad* clip's forward. On the planted model this moves the answer from "sad" to "happy".
# First with `patch_activations` (both clips run in one forward, as two invokes)...

# %%
happy, sad = [c for c in planted_clips(1, EMOTIONS, seed=3) if c.emotion in ("happy", "sad")]
src, tgt = plens.batch_clips([happy], PROMPT), plens.batch_clips([sad], PROMPT)
word = {e: p_tok.convert_tokens_to_ids(e) for e in EMOTIONS}
clean = plens.run(tgt).logits
patched = patch_activations(plens, src, tgt, "blocks.1.mlp.hook_act", align="last")
for name, lg in (("clean sad clip", clean), ("patched from happy", patched)):
    print(f"{name:>20}: logit happy {lg[0, word['happy']]:+.2f}  sad {lg[0, word['sad']]:+.2f}  "
          f"-> answer {p_tok.convert_ids_to_tokens(int(lg[0].argmax()))}")
assert clean[0].argmax() == word["sad"] and patched[0].argmax() == word["happy"]

# %% [markdown]
# ...then the same patch in plain nnsight: read the source site in the first invoke, and in the second invoke
# read the target site's `.output` first, then write into it in place.

# %%
with plens.trace() as tracer:
    with tracer.invoke(src):
        h = plens.blocks[1].mlp.hook_act.output[:, -1]
    with tracer.invoke(tgt):
        act = plens.blocks[1].mlp.hook_act.output
        act[:, -1] = h
        lg = plens.logits.output[:, -1].save()
print("plain nnsight patch, max |difference| to patch_activations:", float((lg.detach() - patched).abs().max()))
assert torch.allclose(lg, patched, atol=1e-5)

# %% [markdown]
# ## c. Attribution patching (AtP)
# `collect_attribution` accumulates activation x gradient of the SER answer margin for every (emotion, layer,
# neuron), one backward per batch; the `atp` selector ranks units by it. The planted units should lead.

# %%
att = collect_attribution(plens, planted_clips(4, EMOTIONS, seed=1), EMOTIONS, answer="word", batch_size=8,
                          progress=False)   # the planted model answers with the emotion word
atp = find_neurons(att, "atp", count=4)
for e in EMOTIONS:
    top = [tuple(u) for u in atp.indices(e).tolist()]
    print(f"AtP top units for {e:>7}: {top}  planted: {planted[e]}")
assert all(set(map(tuple, atp.indices(e).tolist())) == set(planted[e]) for e in EMOTIONS)

# %% [markdown]
# ## d. An intervention in plain nnsight, and the same through the library
# Zero three units of layer 0's `hook_act` at the audio positions, written by hand on `lens.blocks[0]` and
# with `deactivate(units, positions="audio").apply(lens)`: the logits are equal.

# %%
batch = lens.batch_clips(clips[:2], PROMPT)
units, audio = [3, 17, 40], batch.masks.select("audio")  # audio: (batch, pos) bool
with lens.trace(batch):
    act = lens.blocks[0].mlp.hook_act.output
    act[:, :, units] = torch.where(audio[..., None], 0.0, act[:, :, units])
    by_hand = lens.logits.save()
mask = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
mask[0, units] = True
with lens.trace(batch):
    deactivate(mask, positions="audio").apply(lens)
    by_library = lens.logits.save()
base = lens.run(batch, logits="all").logits
by_hand, by_library = by_hand.detach(), by_library.detach()
print(f"edit moved the logits by {float((by_hand - base).abs().max()):.4f}; "
      f"hand vs library: {float((by_hand - by_library).abs().max()):.1e}")
assert torch.allclose(by_hand, by_library, atol=1e-6) and not torch.allclose(by_hand, base)

# %% [markdown]
# ## e. Gradients
# Inside `with metric.backward():`, `site.output.grad` is the gradient of the metric with respect to that site.

# %%
with lens.trace(batch):
    act = lens.blocks[1].mlp.hook_act.output
    metric = lens.logits.output[:, -1].log_softmax(-1)[:, 7].sum()
    with metric.backward():
        g = act.grad.save()
lens.model.zero_grad(set_to_none=True)
print("d log p(token 7) / d blocks.1.mlp.hook_act:", tuple(g.shape), f"max |grad| {float(g.abs().max()):.3e}")
assert g.shape[-1] == lens.d_mlp and g.abs().max() > 0

# %% [markdown]
# ## f. Positions inside several invokes: the invoke masks
# Several invokes are padded to the longest one, so a position mask must be the *padded* one:
# `tracer.invoke_masks[i]` (or `lens.invoke_masks()` inside the invoke's code) holds invoke `i`'s masks at the
# combined length. Library operations' `positions=` names ("audio", "last", ...) use them for you; a hand-written
# mask takes them from there. Here the same audio-position edit, by hand and by name, in the second of two invokes.

# %%
long_b, short_b = lens.batch_clips(clips[:2], PROMPT), lens.batch_clips(clips[2:3], "Emotion?")
got = {}
for how in ("by hand", "by name"):
    with lens.trace() as tracer:
        with tracer.invoke(long_b):
            lens.logits.save()
        with tracer.invoke(short_b):
            m = lens.invoke_masks()  # short_b's masks, padded to long_b's length
            got["padded"] = tuple(m.audio.shape)
            deactivate(mask, positions=m.audio if how == "by hand" else "audio").apply(lens)
            got[how] = lens.logits.output[:, -1].save()
print(f"short batch {tuple(short_b.masks.audio.shape)} -> padded in the trace {got['padded']}; "
      f"hand mask vs 'audio': {float((got['by hand'] - got['by name']).detach().abs().max()):.1e}")
assert got["padded"][1] >= short_b.masks.audio.shape[1] and torch.equal(got["by hand"], got["by name"])
