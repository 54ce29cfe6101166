"""Hostile input, second round (issue #23): each numbered case of the issue reproduced as described, now handled.

CLI cases: one line on stderr and exit status 2 (or a warning line and a record in clips.json / results.json / the
report); API cases: the library's own error, or the correct number. The lock (case 4) is in test_run_lock.py.
Summarised in docs/scaling.md ("Hostile input, second round").
"""
from __future__ import annotations

import copy
import csv
import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import _tiny
from esn_lens.cli import main
from esn_lens.data.clip import EmotionClip, prepare_audio
from esn_lens.errors import CorruptFileError, InputError
from esn_lens.interventions import deactivate
from esn_lens.lens import Lens
from esn_lens.testing import tiny_audio
from pipeline_assets import planted_model_dir, run_main, write_text_corpus

SR = 16000


def wav_header(path, rate, seconds, noise_seconds=1.0, seed=0):
    """A 16-bit mono WAV whose header claims ``seconds`` at ``rate``: ``noise_seconds`` of noise, then zeros as a
    sparse file (a 10-hour file costs no disk)."""
    n = int(rate * seconds)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + 2 * n) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
                + b"data" + struct.pack("<I", 2 * n))
        k = min(n, int(rate * noise_seconds))
        f.write((np.random.default_rng(seed).standard_normal(k) * 3000).astype("<i2").tobytes())
        f.truncate(44 + 2 * n)
    return path


def args(model, corpus, out, *extra, command="run"):
    base = [command, "--model", str(model), "--dataset", "manifest", "--data-dir", str(corpus), "--mode", "constrained",
            "--answer", "word", "--bootstrap", "0", "--batch-size", "8", "--threads", "1", "--no-progress",
            "--out", str(out)]
    if command in ("run", "discover"):
        base += ["--top-frac", "0.03125", "--selector", "conact"]
    if command in ("run", "validate"):
        base += ["--alpha", "2"]
    return base + list(extra)


def one_line(capsys, command="run") -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"esn-lens {command}: error: ") and "Traceback" not in err
    return err


def rows_of(corpus):
    with open(corpus / "manifest.csv") as f:
        return list(csv.reader(f))


def write_rows(corpus, rows):
    with open(corpus / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def distinct_audio(corpus, seed=0):
    """Give every clip of a text corpus its own audio (the shipped helper writes one silence for all)."""
    rng = np.random.default_rng(seed)
    for r in rows_of(corpus)[1:]:
        sf.write(str(corpus / r[0]), (rng.standard_normal(1600) * 0.05).astype(np.float32), SR, subtype="PCM_16")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile2")
    corpus = write_text_corpus(root / "corpus", 4)
    distinct_audio(corpus)
    return {"root": root, "model": planted_model_dir(root), "corpus": corpus}


@pytest.fixture(scope="module")
def finished(assets):
    out = assets["root"] / "finished"
    assert main(args(assets["model"], assets["corpus"], out)) == 0
    return out


# ====================================================================== 1. absurd rates, huge clips
def test_1_header_claiming_1_hz_is_refused_naming_the_clip(tmp_path):
    p = wav_header(tmp_path / "one_hz.wav", 1, 150_000, noise_seconds=150_000)  # ~300 KB, 150k samples "at 1 Hz"
    with pytest.raises(InputError, match=r"clip h1: sampling rate 1 Hz is outside 1000\.\.768000 Hz"):
        EmotionClip("h1", "angry", path=p).load(SR)
    with pytest.raises(InputError, match="clip a1: sampling rate 1 Hz is outside"):
        prepare_audio(np.zeros(150_000, np.float32), 1, SR, name="clip a1")
    with pytest.raises(InputError, match="sampling rate 2000000 Hz is outside"):
        prepare_audio(np.zeros(100, np.float32), 2_000_000, SR, name="clip a2")


RSS_SCRIPT = textwrap.dedent("""
    import sys
    from esn_lens.data.clip import EmotionClip
    def peak_mib():  # this process's own peak (VmHWM; ru_maxrss can carry the spawning parent's peak over exec)
        line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
        return int(line.split()[1]) // 1024
    for path, seconds in zip(sys.argv[1::2], sys.argv[2::2]):
        a, rate = EmotionClip("c", "angry", path=path).load(16000, max_seconds=None if seconds == "none" else float(seconds))
        print(a.size, rate, peak_mib())  # peak so far, MiB
""")


def test_1_ten_hour_and_192khz_files_read_only_what_is_used(tmp_path):
    """A 10-hour 16 kHz file (1.15 GB as a sparse WAV) and a 192 kHz one-hour file (1.4 GB): the run reads the
    model's window (+1 s), the screening at most READ_LIMIT_SECONDS, each far under 1 GB of peak RSS (before: the
    whole file was decoded, ~5 GB for 10 hours). One fresh process reads them in turn; the peak is checked after each."""
    ten_hours = wav_header(tmp_path / "ten_hours.wav", 16000, 10 * 3600)
    hi_rate = wav_header(tmp_path / "hi_rate.wav", 192000, 3600)
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(ten_hours), "31", str(hi_rate), "31", str(ten_hours),
                          "none"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.split()
    (n1, r1, m1), (n2, r2, m2), (n3, r3, m3) = (tuple(map(int, out[i:i + 3])) for i in (0, 3, 6))
    assert (n1, r1) == (31 * 16000 + 1, 16000) and m1 < 400, m1
    assert r2 == 16000 and abs(n2 - 31 * 16000) <= 2 and m2 < 450, m2
    assert n3 == 600 * 16000 + 1 and m3 < 600, m3  # the screening's default cap (600 s)


def test_1_one_hz_clip_in_a_run_is_skipped_with_its_reason(combined):
    err, clips, results, report = combined
    skipped = {s["id"]: s["reason"] for s in results["clips"]["skipped"]}
    assert skipped["one_hz"].startswith("sampling rate 1 Hz is outside 1000..768000 Hz")


# ====================================================================== 2. disk full inside safetensors
def test_2_disk_full_while_safetensors_is_written_is_one_line_and_resumes(assets, finished, tmp_path, capsys,
                                                                           monkeypatch):
    import esn_lens.io as eio
    from safetensors import SafetensorError

    def full(*a, **k):  # what safetensors raises when the OS says ENOSPC
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    out = tmp_path / "run"
    monkeypatch.setattr(eio, "save_file", full)
    assert run_main(args(assets["model"], assets["corpus"], out)) == 2
    err = one_line(capsys)
    assert "safetensors: disk full (No space left on device); free space and continue with --resume" in err
    monkeypatch.undo()
    assert run_main(args(assets["model"], assets["corpus"], out, "--resume")) == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, finished))
    assert a["selectors"] == b["selectors"] and a["baseline"] == b["baseline"]


# ====================================================================== 3. tracebacks
def deep(n=100_000):
    return "[" * n + "]" * n


def test_3_progress_json_nested_100000_deep_on_resume(assets, finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "progress.json").write_text('{"stages": ' + deep() + "}")
    assert run_main(args(assets["model"], assets["corpus"], run, "--resume")) == 2
    assert "progress.json: damaged run file (JSON nested too deeply" in one_line(capsys)


def test_3_results_json_nested_100000_deep_on_report(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "results.json").write_text('{"emotions": ' + deep() + "}")
    assert run_main(["report", str(run)]) == 2
    assert "results.json: damaged run file (JSON nested too deeply" in one_line(capsys, "report")


def test_3_results_json_with_values_of_the_wrong_type(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    r = json.loads((run / "results.json").read_text())
    r["baseline"]["accuracy"] = "high"
    r["clips"]["evaluation"] = "all of them"
    (run / "results.json").write_text(json.dumps(r))
    assert run_main(["report", str(run)]) == 2
    assert "results.json: results do not match what a run writes (clips.evaluation is str, expected an object)" \
        in one_line(capsys, "report")


def test_3_manifest_cell_longer_than_131072_characters(assets, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(assets["corpus"], corpus)
    rows = rows_of(corpus)
    rows[3][4] = "x" * 200_000
    write_rows(corpus, rows)
    assert run_main(args(assets["model"], corpus, tmp_path / "run")) == 2
    err = one_line(capsys)
    assert "manifest.csv line 4: not a readable CSV row (field larger than field limit (131072))" in err
    assert not (tmp_path / "run").exists()


ROWS_SCRIPT = textwrap.dedent("""
    import torch
    from esn_lens.errors import InputError
    from esn_lens.interventions import deactivate
    units = torch.ones(2, 64, dtype=torch.bool)
    for rows in (torch.tensor([1.0, 0.0]), torch.tensor([0, 1]), [0.5, 1.0], "all"):
        try:
            deactivate(units, rows=rows)
            print("accepted")
        except InputError as e:
            print(e)
    print(deactivate(units, rows=[True, False]).rows.tolist())
""")


def test_3_rows_of_an_edit_must_be_a_boolean_mask():
    """As a user runs it (no test-time type checker): the library's one-line error, before: torch's
    NotImplementedError from deep inside the trace."""
    out = subprocess.run([sys.executable, "-c", ROWS_SCRIPT], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.splitlines()
    assert out[:4] == [
        "Gain: rows must be a boolean (batch,) mask (e.g. torch.tensor([True, False])), got torch.float32 tensor of shape (2,)",
        "Gain: rows must be a boolean (batch,) mask (e.g. torch.tensor([True, False])), got torch.int64 tensor of shape (2,)",
        "Gain: rows must be a boolean (batch,) mask (e.g. torch.tensor([True, False])), got torch.float32 tensor of shape (2,)",
        "Gain: rows must be a boolean (batch,) mask (e.g. torch.tensor([True, False])), got str"]
    assert out[4] == "[True, False]"


# ====================================================================== 5. unsigned PCM
def test_5_uint8_audio_is_centred_not_divided_by_255():
    x = tiny_audio(0.5)
    u8 = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8)  # 8-bit PCM as scipy's wav reader returns it
    out = prepare_audio(u8, SR, SR)
    assert np.array_equal(out, ((u8.astype(np.float64) - 128) / 128).astype(np.float32))
    assert abs(float(out.mean())) < 0.01 and np.abs(out - x).max() <= 1 / 256 + 1e-6  # before: mean +0.5
    u16 = (np.round(x * 32768) + 32768).astype(np.uint16)
    assert np.abs(prepare_audio(u16, SR, SR) - x).max() <= 1 / 65536 + 1e-6


def test_5_uint8_gives_the_logits_of_its_float_audio():
    lens = Lens(*_tiny("qwen2_audio"))
    x = tiny_audio(0.5)
    u8 = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8)
    ref = ((u8.astype(np.float64) - 128) / 128).astype(np.float32)
    a = lens.run(lens.batch([u8], "Which emotion?", sampling_rate=SR)).logits
    b = lens.run(lens.batch([ref], "Which emotion?", sampling_rate=SR)).logits
    assert torch.equal(a, b)


# ====================================================================== 6, 7, 8, 13: one hostile corpus, one run
@pytest.fixture(scope="module")
def combined(assets, tmp_path_factory):
    """The corpus without its sad clips (label set basic4), plus: a 1 Hz header, a repeated utterance id, a speaker
    written 'S0 ' and 'S1', a folder, a FIFO and a link to /dev/zero listed as audio, and a clip outside the folder."""
    root = tmp_path_factory.mktemp("combined")
    corpus = root / "corpus"
    shutil.copytree(assets["corpus"], corpus)
    rows = [r for r in rows_of(corpus) if r[1] != "sad"]
    first = next(r for r in rows[1:] if r[1] == "angry")
    wav_header(corpus / "wav" / "one_hz.wav", 1, 150_000, noise_seconds=150_000)
    (corpus / "wav" / "a_folder.wav").mkdir()
    os.mkfifo(corpus / "wav" / "fifo.wav")
    os.symlink("/dev/zero", corpus / "wav" / "zero.wav")
    outside = root / "elsewhere.wav"
    sf.write(str(outside), np.full(1600, 0.01, np.float32), SR)
    s0 = [r for r in rows[1:] if r[2] == "s0"]
    rows += [["wav/one_hz.wav", "angry", "s0", "one_hz", first[4]],
             [s0[1][0], s0[1][1], "s0", s0[0][3], s0[1][4]],  # the id of another row
             [s0[0][0], s0[0][1], "S0 ", "spk_case", s0[0][4]],
             ["wav/a_folder.wav", "angry", "s1", "folder", first[4]],
             ["wav/fifo.wav", "angry", "s1", "fifo", first[4]],
             ["wav/zero.wav", "angry", "s1", "zero", first[4]],
             ["../elsewhere.wav", "angry", "s1", "outside", first[4]]]
    write_rows(corpus, rows)
    out = root / "run"
    import io
    from contextlib import redirect_stderr

    buf = io.StringIO()
    with redirect_stderr(buf):
        assert main(args(assets["model"], corpus, out, "--label-set", "basic4")) == 0, buf.getvalue()
    clips = json.loads((out / "clips.json").read_text())
    results = json.loads((out / "results.json").read_text())
    return buf.getvalue(), clips, results, (out / "report.md").read_text()


def test_6_duplicate_utterance_id_is_said_on_stderr_and_in_the_report(combined, assets):
    err, clips, results, report = combined
    line = [ln for ln in err.splitlines() if "repeat an utterance id" in ln]
    assert len(line) == 1 and line[0].startswith("warning: 1 row(s) repeat an utterance id already listed (")
    assert "the first row of each is used" in line[0]
    assert clips["source"]["duplicates"] and any("repeat an utterance id" in w for w in results["clips"]["source"]["warnings"])
    assert "repeat an utterance id" in report


def test_6_on_duplicate_fail_refuses(combined, assets, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(assets["corpus"], corpus)
    rows = rows_of(corpus)
    write_rows(corpus, rows + [[rows[1][0], rows[1][1], rows[1][2], rows[1][3], rows[1][4]]])
    assert run_main(args(assets["model"], corpus, tmp_path / "run", "--on-duplicate", "fail")) == 2
    err = one_line(capsys)
    assert f"1 row(s) repeat an utterance id already listed ({rows[1][3]})" in err and "--on-duplicate warn" in err


def test_7_speaker_spellings_are_one_speaker_and_never_on_both_sides(combined):
    err, clips, results, report = combined
    assert clips["source"]["merged_speakers"] == {"S0": "s0"}  # the manifest reader strips cells: 'S0 ' is 'S0'
    assert "speaker ids that differ only by case or spaces are one speaker: 'S0' -> 's0'" in err
    sides = {side: set(ids) for side, ids in clips["ids"].items()}
    s0_side = "identification" if any(i.endswith("0") and "s0" in i for i in sides["identification"]) else "evaluation"
    assert "spk_case" in sides[s0_side] | sides["identification"] | sides["evaluation"]
    # the merged clip lies with the other s0 clips
    s0_ids = {r for side in sides.values() for r in side if r.startswith("u") and r.endswith("0")}
    assert s0_ids, s0_ids


def test_7_speaker_disjoint_split_groups_spellings():
    from esn_lens.data import EmotionDataset
    from esn_lens.data.splits import speaker_disjoint_split

    spk = ["spk001", "spk002", "SPK002 ", "spk003", " Spk003", "spk004"] * 2
    clips = [EmotionClip(f"c{i}", "angry" if i % 2 else "sad", audio=np.zeros(800, np.float32), sampling_rate=SR,
                         speaker=s) for i, s in enumerate(spk)]
    for seed in range(6):
        ident, ev = speaker_disjoint_split(EmotionDataset(clips), seed=seed)
        key = lambda c: c.speaker.strip().lower()  # noqa: E731
        assert not ({key(c) for c in ident} & {key(c) for c in ev}), seed


def test_8_label_set_emotion_without_clips_is_said(combined):
    err, clips, results, report = combined
    assert results["emotions"] == ["neutral", "happy", "angry"]
    msg = "label set basic4: no clips of ['sad'] in the corpus; the run uses ['neutral', 'happy', 'angry']"
    assert f"warning: {msg}" in err and msg in results["clips"]["source"]["warnings"] and msg in report


def test_13_folders_fifos_and_devices_get_their_real_reason(combined):
    err, clips, results, report = combined
    skipped = {s["id"]: s["reason"] for s in results["clips"]["skipped"]}
    assert skipped["folder"].endswith("a_folder.wav is a folder, not an audio file")
    assert skipped["fifo"].endswith("fifo.wav is a FIFO (named pipe), not an audio file")
    assert skipped["zero"].endswith("zero.wav is a character device, not an audio file")
    assert "not on disk" not in " ".join(skipped.values())


def test_13_clips_from_outside_the_data_folder_are_recorded(combined):
    err, clips, results, report = combined
    assert clips["source"]["outside_data_dir"] == ["outside"]
    assert "outside" in clips["ids"]["identification"] + clips["ids"]["evaluation"]  # allowed, and used
    assert "1 clip(s) are read from outside the data folder" in err


# ====================================================================== 9. validation overlapping the discovery pool
def test_9_validate_on_clips_of_the_discovery_pool_warns(assets, finished, tmp_path, capsys):
    pool = json.loads((finished / "pool.json").read_text())["ids"]
    corpus = tmp_path / "corpus"
    shutil.copytree(assets["corpus"], corpus)
    rows = rows_of(corpus)
    renamed = next(r for r in rows[1:] if r[3] in pool)
    renamed[3] = "renamed_copy"  # the same audio under another id
    write_rows(corpus, rows)
    out = tmp_path / "val"
    assert run_main(args(assets["model"], corpus, out, "--neurons", str(finished / "neurons"), "--eval-split", "all",
                         command="validate")) == 0
    err = capsys.readouterr().err
    r = json.loads((out / "results.json").read_text())
    found = r["clips"]["source"]["pool_overlap"]
    n_eval = r["baseline"]["n"]
    ids = next(iter(found.values()))
    assert len(ids) == len(pool) and "renamed_copy" in ids  # every pool clip, one of them found by its audio
    assert f"warning: {len(pool)} of {n_eval} evaluation clips were in the discovery pool of" in err
    assert "were in the discovery pool" in (out / "report.md").read_text()


def test_9_disjoint_validation_corpus_gives_no_warning(assets, finished, tmp_path, capsys):
    corpus = write_text_corpus(tmp_path / "other", 4, seed=5, prefix="v")
    distinct_audio(corpus, seed=99)
    out = tmp_path / "val"
    assert run_main(args(assets["model"], corpus, out, "--neurons", str(finished / "neurons"), "--eval-split", "all",
                         command="validate")) == 0
    assert "discovery pool" not in capsys.readouterr().err
    assert "pool_overlap" not in json.loads((out / "results.json").read_text())["clips"]["source"]


# ====================================================================== 10. hand-edited results.json
@pytest.mark.parametrize("edit,msg", [
    (lambda r: r["selectors"]["conact"]["deactivation"].update(heatmap=[[0.0] * 4] * 3),
     "selectors.conact.deactivation.heatmap has shape 3 x 4/4/4, expected 4 x 4"),
    (lambda r: r["baseline"].update(accuracy=0.97),
     "baseline.accuracy is 0.97, but its per-class accuracies and clip counts give 1"),
    (lambda r: r["baseline"].update(n=9), "baseline.n is 9, but clips.evaluation counts 8 clips"),
    (lambda r: r["selectors"]["conact"]["deactivation"]["se"].update(angry=-0.5),
     "selectors.conact.deactivation.se.angry is -0.5, but the heatmap's diagonal holds -1.0"),
    (lambda r: r.update(emotions=["angry", "happy", "sad"]), "clips.identification has keys"),
    (lambda r: r["selectors"]["conact"]["counts"].update(angry=10**6), "more than the model's 128 units"),
], ids=["heatmap_3x4", "made_up_accuracy", "wrong_n", "se_not_heatmap", "emotions_cut", "counts_over_units"])
def test_10_report_refuses_results_that_do_not_match_the_schema(finished, tmp_path, capsys, edit, msg):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    r = json.loads((run / "results.json").read_text())
    edit(r)
    (run / "results.json").write_text(json.dumps(r))
    assert run_main(["report", str(run)]) == 2
    assert msg in one_line(capsys, "report")


def test_10_report_of_the_untouched_run_still_renders(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    assert run_main(["report", str(run)]) == 0


# ====================================================================== 11. prompt beyond the model's positions
def test_11_prompt_beyond_max_positions_is_refused():
    lens = Lens(*_tiny("qwen2_audio"))
    limit = lens.adapter.config.get_text_config().max_position_embeddings
    long_prompt = " ".join(["emotion"] * (limit + 500))
    with pytest.raises(InputError, match=rf"clip long1 \([\d,]+ tokens\): longer than the model's {limit:,} positions"):
        lens.batch([tiny_audio(0.3)], long_prompt, sampling_rate=SR, clip_ids=["long1"])
    lens.batch([tiny_audio(0.3)], " ".join(["emotion"] * 100), sampling_rate=SR)  # within: fine


# ====================================================================== 12. a fine-tuned copy is another model
def test_12_fine_tuned_copy_with_the_same_signs_has_another_fingerprint():
    model, proc = _tiny("qwen2_audio")
    base = Lens(model, proc).fingerprint
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for p in tuned.parameters():
            p.mul_(1.02)  # every sign kept
    assert Lens(tuned, proc).fingerprint != base
    assert Lens(copy.deepcopy(model).to(torch.bfloat16), proc).fingerprint == base  # same weights, bfloat16
    same = Lens(copy.deepcopy(model), proc)
    assert same.fingerprint == base
    with torch.no_grad():
        next(same.model.parameters()).mul_(1.02)  # trained in place after the lens was made: noticed (not cached)
    assert same.fingerprint != base


@pytest.fixture(scope="module")
def tuned_model(assets):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = assets["root"] / "tuned"
    m = AutoModelForCausalLM.from_pretrained(assets["model"])
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.01)
    m.save_pretrained(out)
    AutoTokenizer.from_pretrained(assets["model"]).save_pretrained(out)
    return out


def test_12_validate_refuses_neurons_of_another_model_unless_allowed(assets, finished, tuned_model, tmp_path, capsys):
    neurons = str(finished / "neurons" / "conact.safetensors")
    assert run_main(args(tuned_model, assets["corpus"], tmp_path / "a", "--neurons", neurons, command="validate")) == 2
    err = one_line(capsys, "validate")
    assert "conact.safetensors: neuron set was selected on model" in err and "--allow-other-model" in err
    out = tmp_path / "b"
    assert run_main(args(tuned_model, assets["corpus"], out, "--neurons", neurons, "--allow-other-model",
                         command="validate")) == 0
    assert "neuron set from another model" in capsys.readouterr().err
    r = json.loads((out / "results.json").read_text())
    assert r["config"]["allow_other_model"] is True
    src = next(s["source"] for n, s in r["selectors"].items() if n.startswith("conact@"))
    assert "--allow-other-model" in src
