"""Neuron pages: the run's top-activations stage (resume = one pass), report.html's Neurons section (structure,
every audio file it names exists and decodes, stored once per clip), ``esn-lens inspect``, ``lens.top_activations``
and, where Debian's ``chromium`` is installed, the page in a headless browser (audio durations read back)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import soundfile as sf

from esn_lens import Lens
from esn_lens.cli import main
from esn_lens.demo_model import DEMO_EMOTIONS, demo_clips, demo_prompt, load_demo_model
from esn_lens.run import RunConfig, run_pipeline
from esn_lens.run.data import ClipSplit
from esn_lens.run.folder import CHECKPOINT_HOOKS


@pytest.fixture(scope="module")
def lens():
    return Lens(*load_demo_model())


def _split():
    ident = demo_clips("identification")
    clips = [c for e in DEMO_EMOTIONS for c in [x for x in ident if x.emotion == e][:3]]
    return ClipSplit(clips, clips[:4], DEMO_EMOTIONS, {"dataset": "demo"})


def _cfg(**kw):
    base = dict(model="demo", dataset="demo", selectors=("conact", "mad"), top_frac=0.01, mode="constrained",
                answer="word", validate=False, batch_size=4, checkpoint_every=1, progress=False, threads=1)
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run_dir(lens, tmp_path_factory):
    out = tmp_path_factory.mktemp("pages") / "run"
    run_pipeline(_cfg(), out, lens=lens, clips=_split())
    return out


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_report_has_a_neurons_section_with_playable_audio_stored_once(run_dir):
    data = json.loads((run_dir / "neuron_pages.json").read_text())
    page = (run_dir / "report.html").read_text()
    p = _Tags()
    p.feed(page)
    tags = p.tags
    assert ("section", {"class": "neurons", "id": "neurons"}) in tags
    assert any(t == "input" and a.get("id") == "neuron-search" for t, a in tags)
    panels = [a for t, a in tags if t == "details" and a.get("class") == "neuron"]
    assert [a["data-unit"] for a in panels] == [u["id"] for u in data["units"]] and len(panels) >= 8
    assert all(re.fullmatch(r"\d+:\d+", a["data-unit"]) for a in panels)
    # most emotion-specific first: held by the most sets, then the best mean rank
    keys = [(-u["n_sets"], u["rank"]) for u in data["units"]]
    assert keys == sorted(keys)
    srcs = [a["src"] for t, a in tags if t == "audio"]
    files = {s.split("#")[0] for s in srcs}
    assert len(srcs) > len(files) and len(files) == len(data["clips"])  # one file per clip, many players
    for rel in files:
        assert rel.startswith("assets/clips/") and rel.endswith(".ogg")
        audio, rate = sf.read(run_dir / rel)
        info = next(c for c in data["clips"].values() if c["audio"] == rel)
        assert rate == 16000 and audio.shape == (info["n_samples"],)
    for s in srcs:  # span players name a window inside the clip
        if "#t=" in s:
            a, b = map(float, s.split("#t=")[1].split(","))
            assert 0 <= a < b
    assert (run_dir / "report.html").stat().st_size < 20e6


def test_inspect_prints_the_summary_and_writes_the_page(run_dir, capsys):
    data = json.loads((run_dir / "neuron_pages.json").read_text())
    unit = data["units"][0]
    assert main(["inspect", str(run_dir), unit["id"]]) == 0
    out = capsys.readouterr().out
    assert f"unit {unit['id']}" in out and "top 1:" in out and "conact" in out
    page = (run_dir / f"neuron_{unit['layer']}-{unit['neuron']}.html").read_text()
    assert page.count("<details class='neuron'") == 1 and "assets/clips/" in page
    assert main(["inspect", str(run_dir), "99:99"]) == 2
    assert "not in this run's neuron sets" in capsys.readouterr().err


def test_an_interrupted_top_stage_resumes_to_the_same_pages(lens, run_dir, tmp_path):
    class Stop(Exception):
        pass

    def stop(stage, consumed):
        if stage == "top" and consumed >= 4:
            raise Stop

    out = tmp_path / "run"
    CHECKPOINT_HOOKS.append(stop)
    try:
        with pytest.raises(Stop):
            run_pipeline(_cfg(), out, lens=lens, clips=_split())
    finally:
        CHECKPOINT_HOOKS.remove(stop)
    assert (out / "checkpoints" / "top_activations.safetensors").exists()
    run_pipeline(_cfg(), out, resume=True, lens=lens, clips=_split())
    a = json.loads((out / "neuron_pages.json").read_text())
    b = json.loads((run_dir / "neuron_pages.json").read_text())
    assert a == b


def test_library_call_returns_a_panel_and_plain_data(lens):
    clips = _split().identification[:6]
    panel = lens.top_activations(clips, ["3:5", "1:7"], [demo_prompt(c.utterance_id) for c in clips], k=3)
    rows = panel.table()
    assert {r["unit"] for r in rows} == {"3:5", "1:7"} and len(rows) == 6
    assert [r["value"] for r in rows if r["unit"] == "3:5"] == sorted(
        [r["value"] for r in rows if r["unit"] == "3:5"], reverse=True)
    html = panel._repr_html_()
    assert html.count("<details class='neuron'") == 2 and "data:audio/ogg;base64," in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium package is not installed")
def test_headless_chromium_loads_the_audio(run_dir, tmp_path):
    """The page renders in headless Chromium and its audio elements load: a script reads each player's duration
    in the browser and writes it into the DOM, which --dump-dom returns."""
    data = json.loads((run_dir / "neuron_pages.json").read_text())
    probe = ("<script>window.addEventListener('load',function(){var out={};var els=document.querySelectorAll("
             "'details.neuron[open] audio.clip');els.forEach(function(a,i){a.preload='metadata';"
             "a.addEventListener('loadedmetadata',function(){out[a.getAttribute('src')]=a.duration;"
             "document.getElementById('durations').textContent=JSON.stringify(out);});a.load();});});</script>"
             "<pre id='durations'>{}</pre>")
    page = run_dir / "probe.html"
    page.write_text((run_dir / "report.html").read_text().replace("</body>", probe + "</body>"))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy="
                          "no-user-gesture-required", "--virtual-time-budget=8000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    got = json.loads(re.search(r"<pre id=\"durations\">(.*?)</pre>", dom).group(1))
    first = data["units"][0]
    want = {data["clips"][str(e["clip"])]["audio"]: data["clips"][str(e["clip"])]["n_samples"] / 16000
            for e in first["top"]}
    assert set(got) == set(want)
    for src, d in got.items():
        assert abs(d - want[src]) < 0.01, src
