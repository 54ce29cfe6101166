"""Corpus loaders, in the :data:`DATASETS` registry. Importing this package registers the built-ins:
``iemocap``, ``meld``, ``msp_podcast``, ``ravdess``, ``crema_d``, ``esd``, ``tess``, ``manifest``, ``hf``.

Example: ``load_dataset("crema_d", "/data/CREMA-D", label_set="basic4", check_audio=True)``.
"""
from . import crema_d, csv_manifest, esd, hf, iemocap, meld, msp_podcast, ravdess, tess  # noqa: F401  (register)
from .base import DATASETS, Record, Skipped, collect_clips, corpus_layout, load_dataset
from .iemocap import iemocap_speaker

__all__ = ["DATASETS", "Record", "Skipped", "collect_clips", "corpus_layout", "load_dataset", "iemocap_speaker"]
