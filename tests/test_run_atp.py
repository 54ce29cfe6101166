"""`esn-lens run --selector atp`: attribution patching over the pool as a checkpointed stage; its units are the
planted emotion units, and equal what collect_attribution + find_neurons give in Python on the same pool."""
import json

import torch

from esn_lens.neurons import NeuronSet
from esn_lens.testing.planted import build_planted
from pipeline_assets import EMOTIONS, planted_model_dir, run_main, write_text_corpus


def test_run_selects_atp_units_from_a_checkpointed_attribution_stage(tmp_path):
    model_dir, corpus = planted_model_dir(tmp_path), write_text_corpus(tmp_path / "corpus", 4)
    out = tmp_path / "run"
    argv = ["discover", "--model", str(model_dir), "--dataset", "manifest", "--data-dir", str(corpus),
            "--mode", "constrained", "--answer", "word", "--top-frac", "0.03125", "--selector", "atp",
            "--selector", "conact", "--batch-size", "2", "--checkpoint-every", "1", "--threads", "1", "--no-progress",
            "--out", str(out)]
    assert run_main(argv) == 0
    progress = json.loads((out / "progress.json").read_text())
    assert progress["stages"]["attribution"]["done"]
    atp = NeuronSet.load(out / "neurons" / "atp.safetensors")
    _, _, planted = build_planted(EMOTIONS)
    for e in EMOTIONS:  # the planted units (4 per emotion) are among atp's top 4% units of that emotion
        got = {tuple(x) for x in atp.indices(e).tolist()}
        assert set(map(tuple, planted[e])) <= got, (e, got, planted[e])
    # the same set as in Python over the run's pool, with the run's prompts
    from esn_lens import Lens, SEREvaluator, collect_attribution, find_neurons
    from esn_lens.data import load_dataset

    lens = Lens.from_pretrained(str(model_dir))
    pool_ids = json.loads((out / "pool.json").read_text())["ids"]
    by_id = {c.utterance_id: c for c in load_dataset("manifest", str(corpus))}
    emotions = json.loads((out / "clips.json").read_text())["emotions"]
    ev = SEREvaluator(lens, emotions, mode="constrained", answer="word", seed=0)
    att = collect_attribution(lens, [by_id[i] for i in pool_ids], emotions, evaluator=ev, batch_size=2, progress=False)
    ref = find_neurons(att, "atp", top_frac=0.03125)
    assert torch.equal(ref.masks, atp.masks)
