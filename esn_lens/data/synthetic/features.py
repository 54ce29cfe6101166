"""How separable a synthetic corpus is: simple prosodic features and a speaker-held-out logistic regression."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

def prosodic_features(x: np.ndarray, sr: int = 16000, text: str = "") -> np.ndarray:
    """A small prosodic feature vector: log-f0 mean/sd/range (autocorrelation), voiced ratio, energy
    mean/sd (dB, relative to the clip), rate proxy (duration per character), spectral centroid, high-band
    energy ratio, zero-crossing rate and frame-energy modulation."""
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    n = 1 + max(0, (x.size - frame) // hop)
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    fr = x[np.minimum(idx, x.size - 1)] * np.hanning(frame)
    rms = np.sqrt(np.mean(fr ** 2, axis=1)) + 1e-8
    db = 20 * np.log10(rms)
    active = db > db.max() - 30
    spec = np.abs(np.fft.rfft(fr, n=1024, axis=1)) ** 2
    ac = np.fft.irfft(spec, axis=1)[:, :frame]
    lo, hi = int(sr / 400), int(sr / 60)
    seg = ac[:, lo:hi] / (ac[:, :1] + 1e-12)
    lag = seg.argmax(1) + lo
    strength = seg.max(1)
    voiced = active & (strength > 0.35)
    f0 = np.log(sr / lag[voiced]) if voiced.any() else np.array([np.log(150.0)])
    freqs = np.fft.rfftfreq(1024, 1 / sr)
    ps = spec[active].sum(0) + 1e-12
    centroid = float((freqs * ps).sum() / ps.sum())
    hiratio = float(np.log(ps[freqs > 3000].sum() / ps.sum()))
    zcr = float(np.mean(np.abs(np.diff(np.sign(x))) > 0))
    dur = active.sum() * hop / sr
    d_db = np.diff(db[active]) if active.sum() > 2 else np.zeros(1)
    return np.array([f0.mean(), f0.std(), np.percentile(f0, 90) - np.percentile(f0, 10), voiced.mean(),
                     db[active].mean() - db.max(), db[active].std(), dur / max(len(text), 1) * 10,
                     centroid / 1000, hiratio, zcr * 10, np.abs(d_db).mean() / 10], dtype=np.float64)


def separability(out_dir: str | Path, test_speakers: int | float = 0.25, seed: int = 0, epochs: int = 500) -> dict:
    """Speaker-held-out accuracy of a logistic regression (torch, L2) on :func:`prosodic_features`.

    Returns ``{"accuracy", "chance", "per_class", "n_train", "n_test"}``.
    """
    import soundfile as sf
    import torch

    rows = list(csv.DictReader(open(Path(out_dir) / "manifest.csv")))
    feats, labels, spks = [], [], []
    for r in rows:
        x, sr = sf.read(Path(out_dir) / r["path"], dtype="float32")
        feats.append(prosodic_features(x, sr, r["text"]))
        labels.append(r["emotion"])
        spks.append(r["speaker"])
    emos = sorted(set(labels))
    speakers = sorted(set(spks))
    rng = np.random.default_rng(seed)
    k = test_speakers if isinstance(test_speakers, int) else max(1, round(test_speakers * len(speakers)))
    test = set(rng.choice(speakers, size=k, replace=False).tolist())
    X = np.stack(feats)
    y = np.array([emos.index(l) for l in labels])
    te = np.array([s in test for s in spks])
    mu, sd = X[~te].mean(0), X[~te].std(0) + 1e-9
    Xt = torch.tensor((X - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y)
    lin = torch.nn.Linear(X.shape[1], len(emos))
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=epochs)
    tr_idx = torch.tensor(np.flatnonzero(~te))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(Xt[tr_idx]), yt[tr_idx]) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    pred = lin(Xt).argmax(1).numpy()
    acc = float((pred[te] == y[te]).mean())
    per = {e: float((pred[te & (y == i)] == i).mean()) for i, e in enumerate(emos)}
    return {"accuracy": acc, "chance": 1 / len(emos), "per_class": per, "n_train": int((~te).sum()),
            "n_test": int(te.sum()), "train_accuracy": float((pred[~te] == y[~te]).mean())}
