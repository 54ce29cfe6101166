"""The Qwen2-Audio adapter's training forward (audio tower on cut features + decoder), fed by
esn_lens.training's collation, equals the Lens forward on the processor's full window."""
import numpy as np
import torch

from esn_lens.lens import Lens
from esn_lens.training import collate_cut_features


def test_cut_feature_forward_equals_full_window_forward(tiny):
    lens = Lens(*tiny("qwen2_audio"))
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(int(16000 * s)).astype(np.float32) * 0.1 for s in (0.64, 1.2)]
    b = lens.batch(audios, ["what emotion?", "what emotion?"], sampling_rate=16000)
    full = lens.run(b).logits  # last valid token of each row
    feats, fam = b.inputs["input_features"], b.inputs["feature_attention_mask"]
    n_frames = fam.sum(-1)
    assert feats.shape[-1] == 3000 and int(n_frames.max()) < 200  # the cut really drops most of the window
    items = [dict(ids=b.inputs["input_ids"][i][b.inputs["attention_mask"][i].bool()],
                  feats=feats[i, :, :int(n_frames[i]) + 4], flen=int(n_frames[i]), y=i) for i in range(2)]
    ids, am, cut, flen, y = collate_cut_features(items, lens.tokenizer.pad_token_id)
    assert cut.shape[-1] % 2 == 0 and cut.shape[-1] == int(n_frames.max()) + 4 + (int(n_frames.max()) + 4) % 2
    assert flen.tolist() == n_frames.tolist() and y.tolist() == [0, 1]
    assert am[0, 0] == 0 and am[:, -1].tolist() == [1, 1]  # the shorter row is left-padded
    with torch.no_grad():
        enc, n_tokens = lens.adapter.encode_cut_features(cut, flen)
        mine = lens.adapter.last_logits_from_audio(ids, am, enc, n_tokens)
    assert n_tokens.tolist()[0] < n_tokens.tolist()[1]
    assert (ids == lens.model.config.audio_token_id).sum(-1).tolist() == n_tokens.tolist()
    torch.testing.assert_close(mine, full, atol=1e-5, rtol=1e-5)
