"""collect_attribution scores the answer format the user's evaluator reads (or the model records), never a silent
default: on the shipped demo model (which answers with emotion words) it selects exactly the units of the explicit
word-answer evaluator, which differ from the digit-answer ones."""
from __future__ import annotations

import pytest
import torch

from esn_lens import Lens, SEREvaluator, collect_attribution, find_neurons
from esn_lens.demo_model import DEMO_EMOTIONS, demo_clips, demo_evaluator, load_demo_model
from esn_lens.errors import InputError
from esn_lens.testing import build_tiny, tiny_audio
from esn_lens.data import EmotionClip

E = list(DEMO_EMOTIONS)


@pytest.fixture(scope="module")
def demo():
    model, proc = load_demo_model()
    if getattr(model, "esn_lens_answer_format", None) is None:  # the record load_demo_model attaches (issue 28)
        model.esn_lens_answer_format = {"answer": "word", "stop": "answer"}
    lens = Lens(model, proc)
    clips = demo_clips("unseen")
    pool = [c for e in E for c in [x for x in clips if x.emotion == e][:3]]
    return lens, pool


def _units(att):
    ns = find_neurons(att, "atp", top_frac=0.02)
    return ns, {e: set(map(tuple, ns.indices(e).tolist())) for e in E}


def test_demo_model_default_selects_the_word_answer_evaluators_units(demo):
    lens, pool = demo
    by_default = collect_attribution(lens, pool, E, batch_size=12, progress=False)
    explicit = collect_attribution(lens, pool, E, evaluator=demo_evaluator(lens), batch_size=12, progress=False)
    assert torch.equal(by_default.sum, explicit.sum) and by_default.n_clips.tolist() == [3.0] * 4
    (a, ua), (b, ub) = _units(by_default), _units(explicit)
    assert torch.equal(a.masks, b.masks) and all(len(ua[e]) == 20 for e in E)
    # scoring digits instead (what a silent default did) selects other units
    _, ud = _units(collect_attribution(lens, pool, E, answer="digit", batch_size=12, progress=False))
    jaccard = [len(ua[e] & ud[e]) / len(ua[e] | ud[e]) for e in E]
    assert max(jaccard) < 0.6 and sum(jaccard) / 4 < 0.5, jaccard


def test_no_evaluator_and_no_known_format_is_refused():
    model, proc = build_tiny("qwen2_audio")
    lens = Lens(model, proc)
    clips = [EmotionClip(f"c{i}", E[i % 4], audio=tiny_audio(0.3, seed=i), sampling_rate=16000) for i in range(4)]
    with pytest.raises(InputError) as e:
        collect_attribution(lens, clips, E, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "evaluator=" in msg and "answer='word'" in msg
    ev = SEREvaluator(lens, E, mode="constrained", answer="digit")
    with pytest.raises(InputError, match="answer='word' but the evaluator reads 'digit'"):
        collect_attribution(lens, clips, E, evaluator=ev, answer="word", progress=False)
    # an explicit format equals the evaluator reading that format
    a = collect_attribution(lens, clips, E, answer="digit", progress=False)
    b = collect_attribution(lens, clips, E, evaluator=ev, progress=False)
    assert torch.equal(a.sum, b.sum)
