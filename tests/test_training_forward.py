"""The Qwen2-Audio adapter's training forward (audio tower on cut features + decoder) equals the Lens forward."""
import numpy as np
import torch

from esn_lens.lens import Lens


def _left_pad(rows, pad_id):
    S = max(len(r) for r in rows)
    ids = torch.full((len(rows), S), pad_id, dtype=torch.long)
    am = torch.zeros(len(rows), S, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, S - len(r):] = r
        am[i, S - len(r):] = 1
    return ids, am


def test_cut_feature_forward_equals_full_window_forward(tiny):
    lens = Lens(*tiny("qwen2_audio"))
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(int(16000 * s)).astype(np.float32) * 0.1 for s in (0.64, 1.2)]
    b = lens.batch(audios, ["what emotion?", "what emotion?"], sampling_rate=16000)
    full = lens.run(b).logits  # last valid token of each row
    feats, fam = b.inputs["input_features"], b.inputs["feature_attention_mask"]
    n_frames = fam.sum(-1)
    assert feats.shape[-1] == 3000 and int(n_frames.max()) < 200  # the cut really drops most of the window
    keep = int(n_frames.max()) + 4
    keep += keep % 2
    ids, am = _left_pad([b.inputs["input_ids"][i][b.inputs["attention_mask"][i].bool()] for i in range(2)],
                        lens.tokenizer.pad_token_id)
    with torch.no_grad():
        enc, n_tokens = lens.adapter.encode_cut_features(feats[..., :keep], n_frames)
        mine = lens.adapter.last_logits_from_audio(ids, am, enc, n_tokens)
    assert n_tokens.tolist()[0] < n_tokens.tolist()[1]
    assert (ids == lens.model.config.audio_token_id).sum(-1).tolist() == n_tokens.tolist()
    torch.testing.assert_close(mine, full, atol=1e-5, rtol=1e-5)

