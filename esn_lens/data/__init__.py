"""Emotion corpora: clips, datasets, label sets, loaders (in a registry), splits and a synthetic corpus.

Example::

    from esn_lens.data import load_dataset, split_identification_evaluation
    ds = load_dataset("iemocap", "/data/IEMOCAP_full_release")          # label set iemocap4
    print(ds.manifest.summary())
    ident, evaluation = split_identification_evaluation(ds, eval_speakers=["Ses05F", "Ses05M"])
"""
from .clip import EmotionClip, prepare_audio
from .dataset import DROP_REASONS, EmotionDataset, Manifest
from .labels import (ALIASES, CANONICAL_EMOTIONS, CORPUS_LABELS, LABEL_SETS, CorpusLabels, LabelMapper, LabelSet,
                     get_label_set, order_emotions)
from .loaders import DATASETS, Record, Skipped, corpus_layout, load_dataset
from .splits import Split, speaker_disjoint_split, split_identification_evaluation

__all__ = [
    "EmotionClip", "prepare_audio",
    "EmotionDataset", "Manifest", "DROP_REASONS",
    "LabelSet", "CorpusLabels", "LabelMapper", "LABEL_SETS", "CORPUS_LABELS", "CANONICAL_EMOTIONS", "ALIASES",
    "get_label_set", "order_emotions",
    "DATASETS", "Record", "Skipped", "corpus_layout", "load_dataset",
    "Split", "speaker_disjoint_split", "split_identification_evaluation",
]
