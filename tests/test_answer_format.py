"""The answer format is never a silent trap (issue #28): the shipped demo model carries its format in its record
and evaluators default to it; a baseline near chance warns with the likely cause; ``mode="generate"`` parses
the demo's answers (it repeats the word: "neutralneutral...") by stopping at the first parsed answer."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from esn_lens.answer_format import (AnswerFormat, NearChanceWarning, answer_format_of, attach_answer_format,
                                    first_parsed_answer, read_answer_format, warn_if_near_chance)
from esn_lens.demo_model import DEMO_EMOTIONS, PROMPT_SEED, demo_clips, demo_model_dir, load_demo_model
from esn_lens.errors import InputError
from esn_lens.evaluate import SEREvaluator
from esn_lens.lens import Lens


@pytest.fixture(scope="module")
def lens():
    torch.set_num_threads(1)
    return Lens(*load_demo_model())


def test_demo_record_and_default(lens):
    assert read_answer_format(demo_model_dir()) == AnswerFormat("word", "answer")
    assert answer_format_of(lens.model) == AnswerFormat("word", "answer")
    ev = SEREvaluator(lens, DEMO_EMOTIONS, seed=PROMPT_SEED)
    assert (ev.answer, ev.stop) == ("word", "answer")
    assert "['angry', 'happy', 'neutral', 'sad']" in ev.scoring and "word answers" in ev.scoring
    assert SEREvaluator(lens, DEMO_EMOTIONS, answer="digit").answer == "digit"  # an explicit choice wins


def test_digit_on_demo_warns_with_cause(lens):
    clips = demo_clips("unseen")[::4]  # 36 clips, 9 per emotion
    with warnings.catch_warnings():
        warnings.simplefilter("error", NearChanceWarning)  # the recorded format: no warning
        good = SEREvaluator(lens, DEMO_EMOTIONS, seed=PROMPT_SEED, batch_size=36).run(clips)["baseline"]
    assert good.accuracy > 0.8
    with pytest.warns(NearChanceWarning, match=r"near chance \(25\.0%\).*use answer='word'"):
        bad = SEREvaluator(lens, DEMO_EMOTIONS, answer="digit", seed=PROMPT_SEED, batch_size=36).run(clips)["baseline"]
    assert bad.accuracy < 0.4


def test_generate_parses_demo_unseen(lens):
    """Every third unseen clip (48; all 144: 144 parse, accuracy 90.3 % = constrained): >= 90 % parse and the
    answers agree with constrained scoring."""
    clips = demo_clips("unseen")[::3]
    gen = SEREvaluator(lens, DEMO_EMOTIONS, mode="generate", seed=PROMPT_SEED, batch_size=72, max_new_tokens=2)
    g = gen.run(clips)["baseline"]
    assert len(clips) == 48 and g.n_unparsed <= 0.1 * len(clips)
    assert set(g.answers) <= set(DEMO_EMOTIONS)  # each answer is cut at its first parsed prefix: one word
    c = SEREvaluator(lens, DEMO_EMOTIONS, seed=PROMPT_SEED, batch_size=48).run(clips)["baseline"]
    agree = np.mean([a == b for a, b in zip(g.predictions, c.predictions)])
    assert agree >= 0.95 and abs(g.accuracy - c.accuracy) <= 0.03


def test_first_parsed_answer_cuts_repeats(lens):
    tok = lens.tokenizer
    ids = tok("neutralneutralneutral", add_special_tokens=False).input_ids
    opts = ("sad", "neutral", "angry", "happy")
    assert tok.decode(ids) == "neutralneutralneutral"
    assert first_parsed_answer(tok, ids, opts) == ("neutral", "neutral")
    from esn_lens.prompts import parse_answer

    assert parse_answer("neutralneutralneutral", opts) is None  # what the whole text gives (stop="eos")
    ids = tok("maybe", add_special_tokens=False).input_ids
    assert first_parsed_answer(tok, ids, opts) == ("maybe", None)


def test_near_chance_rule_and_bad_record(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NearChanceWarning)
        assert not warn_if_near_chance(0.30, 10, 4, answer="digit", mode="constrained")  # too few clips to tell
        assert not warn_if_near_chance(0.40, 100, 4, answer="digit", mode="constrained")
    with pytest.warns(NearChanceWarning, match="60 of 100 answers named no option"):
        assert warn_if_near_chance(0.20, 100, 4, answer="word", mode="generate", n_unparsed=60)
    (tmp_path / "esn_lens.json").write_text(json.dumps({"answer_format": {"answer": "letter"}}))
    with pytest.raises(InputError, match="answer must be one of"):
        read_answer_format(tmp_path)
    (tmp_path / "esn_lens.json").write_text("{}")
    with pytest.raises(InputError, match="esn_lens.json: expected"):
        read_answer_format(tmp_path)
    assert read_answer_format(tmp_path / "none") is None
    m = torch.nn.Linear(1, 1)
    assert answer_format_of(attach_answer_format(m, AnswerFormat("word"))) == AnswerFormat("word", "eos")
