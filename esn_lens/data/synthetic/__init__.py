"""A synthetic emotional-speech corpus: espeak-ng speech with emotion-specific prosody and voice quality.

Every emotion speaks the same lexically neutral sentences; classes differ only in prosody (pitch
offset and range, rate, gain) and voice quality (treble, lowpass, overdrive, tremolo), relative to a
random per-speaker baseline, with per-clip jitter scaled by ``difficulty``, level changes and white
noise at 15-40 dB SNR. Deterministic by seed (same bytes for the same arguments).

espeak-ng (GPL-3) comes from the optional ``espeakng-loader`` wheel (``pip install esn-lens[speech]``)
and is loaded lazily through ctypes inside :func:`generate_corpus`; nothing else in the library needs it.

Example::

    from esn_lens.data.synthetic import generate_corpus
    info = generate_corpus("corpus/", n_per_emotion_per_speaker=10, speakers=8)
    # corpus/manifest.csv: path,emotion,speaker,utterance_id,text  (read it with the "manifest" loader)
"""
from __future__ import annotations

from .corpus import generate_corpus, hash_int, render_clip
from .features import prosodic_features, separability
from .recipes import (DEMO_DIFFICULTY, DEMO_INTENSITY, DEMO_RECIPES, EFFECTS, RECIPES, SENTENCES, lowpass, overdrive,
                      presence, scale_recipe, treble, tremolo)
from .voices import ACCENTS, VARIANTS, Speaker, make_speakers

__all__ = ["generate_corpus", "hash_int", "render_clip", "prosodic_features", "separability", "DEMO_DIFFICULTY",
           "DEMO_INTENSITY", "DEMO_RECIPES", "EFFECTS", "RECIPES", "SENTENCES", "lowpass", "overdrive", "presence",
           "scale_recipe", "treble", "tremolo", "ACCENTS", "VARIANTS", "Speaker", "make_speakers"]
