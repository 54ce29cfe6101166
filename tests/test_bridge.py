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


@pytest.mark.parametrize("family,arch", [("audio_flamingo3", "AudioFlamingo3ForConditionalGeneration"),
                                         ("qwen2", "Qwen2ForCausalLM")])
def test_bridge_equals_the_plain_model_at_every_non_padding_position(family, arch):
    """The documented difference: at padding positions (attention mask 0) the bridge's values are not the plain
    model's (its own attention treats fully masked rows differently); every non-padding position is equal, and the
    library counts, edits and reads logits only there (last valid token, valid/audio/no_prompt positions)."""
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    plain_model, proc = build_tiny(family, seed=3)
    bridged_model, proc2 = build_tiny(family, seed=3)
    tok = getattr(proc2, "tokenizer", proc2)
    bridge = build_bridge_from_module(bridged_model, arch, hf_config=bridged_model.config, tokenizer=tok)
    plain, bridged = Lens(plain_model, proc), Lens(bridge, proc2)
    audios = [tiny_audio(0.4), tiny_audio(0.9, freq=300)] if family != "qwen2" else None
    prompts = ["Which emotion?", "What is the emotion of this speaker, in one word please?"]
    b1 = plain.batch(audios, prompts, sampling_rate=16000)
    b2 = bridged.batch(audios, prompts, sampling_rate=16000)
    assert bool(b1.masks.padding.any())  # the batch has padding positions
    names = ["blocks.1.mlp.hook_act", "blocks.1.hook_resid_post"]
    o1, o2 = plain.run(b1, logits="all", record=names), bridged.run(b2, logits="all", record=names)
    keep = ~b1.masks.padding
    assert torch.allclose(o1.logits[keep], o2.logits[keep], atol=1e-5)
    for n in names:
        assert torch.allclose(o1.cache[n][keep], o2.cache[n][keep], atol=1e-5), n
