"""The TransformerLens TransformerBridge backend gives the same neuron values as the plain model."""
import pytest
import torch

from esn_lens.errors import InputError
from esn_lens.interventions import deactivate
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny, tiny_audio


@pytest.mark.parametrize("family,arch", [("audio_flamingo3", "AudioFlamingo3ForConditionalGeneration"),
                                         ("qwen2", "Qwen2ForCausalLM")])
def test_bridge_matches_plain_model(family, arch):
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    plain_model, proc = build_tiny(family, seed=3)
    bridged_model, proc2 = build_tiny(family, seed=3)  # the bridge rewrites its model in place: use a twin
    tok = getattr(proc2, "tokenizer", proc2)
    bridge = build_bridge_from_module(bridged_model, arch, hf_config=bridged_model.config, tokenizer=tok)
    plain, bridged = Lens(plain_model, proc), Lens(bridge, proc2)
    assert bridged.adapter.name == "transformer_bridge"
    assert (bridged.n_layers, bridged.d_mlp) == (plain.n_layers, plain.d_mlp)
    assert bridged.fingerprint == plain.fingerprint
    audios = [tiny_audio(0.4), tiny_audio(0.7, freq=300)] if family != "qwen2" else None
    b1 = plain.batch(audios, ["Which emotion?", "Emotion now"], sampling_rate=16000)
    b2 = bridged.batch(audios, ["Which emotion?", "Emotion now"], sampling_rate=16000)
    assert torch.equal(b1.inputs["input_ids"], b2.inputs["input_ids"])
    idx = torch.tensor([0, 1])
    s1, s2 = plain.new_stats(("a", "b")), bridged.new_stats(("a", "b"))
    u = torch.zeros(2, 64, dtype=torch.bool)
    u[1, :16] = True
    o1 = plain.run(b1, stats=s1, emotion_index=idx, edits=[deactivate(u)])
    o2 = bridged.run(b2, stats=s2, emotion_index=idx, edits=[deactivate(u)])
    assert torch.equal(s1.K, s2.K) and torch.equal(s1.T, s2.T)
    assert torch.allclose(s1.sum, s2.sum, atol=1e-5)
    assert torch.allclose(o1.logits, o2.logits, atol=1e-5)
    with pytest.raises(InputError, match="generation is not supported"):
        bridged.run(b2, max_new_tokens=2)
