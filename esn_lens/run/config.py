"""The run's configuration: what a run computes (identity) and how it runs (runtime), checked before any model loads."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError

#: The paper's selectors, run by default (``mean_diff``/``cohens_d`` and user selectors on request).
PAPER_SELECTORS = ("lap", "lape", "mad", "conact", "random")


#: the models shipped with the package: "demo" (trained here), "real_model" (Whisper tiny.en + SmolLM2-135M, only the
#: projector trained here) and "real_demo" (SmolLM2-135M behind a toy encoder); the last two need the real-demo parts
SHIPPED_MODELS = ("demo", "real_model", "real_demo")
#: whose MLP neurons a run's units are (``--units``), and why decoder is the default
UNITS = ("decoder", "encoder")
UNITS_HELP = ("whose MLP neurons are the units: decoder (default: the paper's site, where the answer is formed) or "
              "encoder (the audio encoder's, positions = its frames; asks where emotion first becomes selective); "
              "part of the run's identity")

@dataclass
class RunConfig:
    """What a run computes (identity fields) and how it runs (runtime fields, free to change on resume).

    Identity: model, data, selectors, budget, alphas, units (decoder or encoder), SER protocol, seeds, bootstrap. Runtime: dtype,
    device, device_map, checkpoint_every, progress, threads. ``model="demo"`` / ``dataset="demo"`` use the
    shipped demo model and clips. ``neurons``: NeuronSet files (or folders of them) found elsewhere, e.g.
    on another corpus, validated next to (or, with ``discover=False``, instead of) the discovered sets.
    """

    model: str = "demo"
    dataset: str = "demo"
    data_dir: str | None = None
    label_set: str | None = None
    selectors: tuple[str, ...] = PAPER_SELECTORS
    top_frac: float = 0.005
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0)
    site: str = "act"
    positions: str = "valid"
    #: whose MLP neurons are the units: "decoder" (the paper's site, default) or "encoder" (the audio encoder's,
    #: :func:`esn_lens.adapters.encoder.encoder_lens`; positions are then encoder frames)
    units: str = "decoder"
    mode: str = "generate"
    answer: str = "digit"
    max_new_tokens: int = 20
    batch_size: int = 8
    seed: int = 0
    eval_fraction: float = 0.5
    eval_per_emotion: int | None = 200
    ident_per_emotion: int | None = None
    pool_cap: int | None = None
    eval_split: str = "eval"
    discover: bool = True
    validate: bool = True
    neurons: tuple[str, ...] = ()
    bootstrap: int = 1000
    #: the registered intervention of the deactivation stage (heatmap / SE / ACE / ESS); "deactivate" = gain 0
    intervention: str = "deactivate"
    #: keyword options of selectors / of the intervention, name -> {key: value} (``--selector-option NAME.KEY=VALUE``)
    selector_options: dict = field(default_factory=dict)
    intervention_options: dict = field(default_factory=dict)
    # runtime
    dtype: str | None = None
    device: str | None = None
    device_map: str | None = None
    checkpoint_every: int = 4
    progress: bool = True
    threads: int | None = None
    #: threads building the next batches while the model runs (None: a default for the machine, 0: serial)
    workers: int | None = None
    trust_remote_code: bool = False
    on_bad_clip: str = "skip"
    #: rows repeating an utterance id: "warn" (keep the first, say so) or "fail" (refuse the run)
    on_duplicate: str = "warn"
    #: validate neuron sets found on another model (another fingerprint); recorded in results.json
    allow_other_model: bool = False
    #: plugin modules imported for this run (--plugin and entry points); config.json records them with versions
    plugins: tuple = ()

    RUNTIME = ("dtype", "device", "device_map", "checkpoint_every", "progress", "threads", "workers", "trust_remote_code",
               "on_bad_clip", "on_duplicate", "plugins")

    def __post_init__(self) -> None:
        self.selectors = tuple(self.selectors)
        self.alphas = tuple(float(a) for a in self.alphas)
        self.neurons = tuple(str(p) for p in self.neurons)
        self.plugins = tuple(self.plugins)
        for what in ("selector_options", "intervention_options"):
            opts = getattr(self, what)
            if not isinstance(opts, dict) or not all(isinstance(v, dict) for v in opts.values()):
                raise InputError(f"{what} must map a name to a dict of options, e.g. {{'lape': {{'filter_percentile': 95}}}}, "
                                 f"got {opts!r}")

    def check(self, *, clips_given: bool = False, lens_given: bool = False) -> "RunConfig":
        """Refuse bad values with one clear message each (before any model is loaded).

        ``clips_given`` / ``lens_given``: the clips / model come from the caller, so ``dataset`` / ``model``
        are only labels and are not looked up.
        """
        from ..adapters.base import check_site
        from ..selectors import SELECTORS

        if not self.discover and not self.validate:
            raise InputError("a run must discover, validate, or both")
        unknown = [s for s in self.selectors if s not in SELECTORS]
        if unknown:
            raise InputError(f"unknown selector(s) {unknown}; registered: {', '.join(SELECTORS.names())}")
        if len(set(self.selectors)) != len(self.selectors):
            raise InputError(f"selectors repeat: {list(self.selectors)}")
        if self.discover and not self.selectors:
            raise InputError("discovery needs at least one selector")
        if not self.discover and not self.neurons:
            raise InputError("validation without discovery needs neuron files (--neurons FILE)")
        if not (isinstance(self.top_frac, (int, float)) and 0 < float(self.top_frac) <= 1):
            raise InputError(f"top fraction must be in (0, 1] (0.005 = top 0.5%), got {self.top_frac}")
        if any(not math.isfinite(a) for a in self.alphas):
            raise InputError(f"alphas must be finite numbers, got {list(self.alphas)}")
        if len(set(self.alphas)) != len(self.alphas):
            raise InputError(f"alphas repeat: {list(self.alphas)}")
        check_site(self.site)
        if self.units not in UNITS:
            raise InputError(f"units must be 'decoder' or 'encoder', got {self.units!r}")
        from ..loading import parse_dtype

        parse_dtype(self.dtype)  # an unknown --dtype is refused before any model loads
        if self.positions not in ("valid", "audio", "no_prompt", "last"):
            raise InputError(f"unknown positions {self.positions!r}; expected valid, audio, no_prompt or last")
        if self.mode not in ("generate", "constrained"):
            raise InputError(f"mode must be 'generate' or 'constrained', got {self.mode!r}")
        if self.answer not in ("digit", "word"):
            raise InputError(f"answer must be 'digit' or 'word', got {self.answer!r}")
        from ..interventions import INTERVENTIONS

        if self.intervention not in INTERVENTIONS:
            raise InputError(f"unknown intervention {self.intervention!r}; registered: {', '.join(INTERVENTIONS.names())} "
                             "(register your own with @INTERVENTIONS.register in a --plugin module)")
        from .extensions import CONTEXT_PARAMS, preflight, run_context

        asks = run_context(INTERVENTIONS.get(self.intervention), dict.fromkeys(CONTEXT_PARAMS, True))
        if asks and not self.discover:
            raise InputError(f"intervention {self.intervention!r} needs the run's own {' and '.join(asks)} (discover), "
                             "not --neurons alone")
        if "attribution" in asks and "atp" not in self.selectors:
            raise InputError(f"intervention {self.intervention!r} asks for the run's attribution, which only a run "
                             "with the atp selector collects")
        preflight(self.selectors if self.discover else (), self.selector_options, self.intervention,
                  self.intervention_options, site=self.site)
        if self.on_bad_clip not in ("skip", "fail"):
            raise InputError(f"on_bad_clip must be 'skip' or 'fail', got {self.on_bad_clip!r}")
        if self.on_duplicate not in ("warn", "fail"):
            raise InputError(f"on_duplicate must be 'warn' or 'fail', got {self.on_duplicate!r}")
        if self.eval_split not in ("eval", "all"):
            raise InputError(f"eval_split must be 'eval' or 'all', got {self.eval_split!r}")
        for name in ("batch_size", "checkpoint_every", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.bootstrap < 0:
            raise InputError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if not 0 < self.eval_fraction < 1:
            raise InputError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.dataset != "demo" and not clips_given:
            from ..data.loaders import DATASETS

            DATASETS.get(self.dataset)  # KeyError listing the loaders
            if self.data_dir is None:
                raise InputError(f"dataset {self.dataset!r} needs a data folder (--data-dir PATH)")
            if not Path(self.data_dir).expanduser().exists():
                raise InputError(f"data folder {self.data_dir} does not exist")
        if self.label_set is not None and not clips_given:
            from ..data.labels import get_label_set

            get_label_set(self.label_set)  # InputError listing the registered label sets
        if self.model not in SHIPPED_MODELS and not lens_given:
            check_model_arg(self.model)
        for p in self.neurons:
            if not Path(p).exists():
                raise InputError(f"neuron file {p} does not exist")
        return self

    def identity(self) -> dict[str, Any]:
        """The fields that determine the results (compared when a run is resumed)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUNTIME}
        d["selectors"], d["alphas"] = list(self.selectors), list(self.alphas)
        d["model"] = normalise_model(self.model)  # ./m, m and /abs/m name one model
        if d["intervention"] == "deactivate":  # the default is left out: run folders of earlier versions still resume
            del d["intervention"]
        for k in ("selector_options", "intervention_options"):  # likewise when empty
            if not d[k]:
                del d[k]
        if not d["allow_other_model"]:  # likewise: recorded only when used
            del d["allow_other_model"]
        if d["units"] == "decoder":  # likewise: the default (decoder units) is left out
            del d["units"]
        d["neurons"] = [str(Path(p).expanduser().resolve()) for p in self.neurons]
        if d["data_dir"] is not None:
            d["data_dir"] = str(Path(d["data_dir"]).expanduser().resolve())
        return d

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["selectors"], d["alphas"], d["neurons"] = list(self.selectors), list(self.alphas), list(self.neurons)
        from .extensions import plugin_record

        d["plugins"] = plugin_record(self.plugins)  # module, distribution, version, file
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        d = dict(d)
        if d.get("plugins") and isinstance(d["plugins"][0], dict):  # config.json's record -> the module names
            d["plugins"] = [p["module"] for p in d["plugins"]]
        return cls(**{k: v for k, v in d.items() if k in known})


def _looks_local(m: str) -> bool:
    return m.startswith((os.sep, ".", "~")) or os.path.exists(os.path.expanduser(m)) or m.count("/") > 1


def normalise_model(model: str) -> str:
    """The run identity's model name: an existing local folder as its absolute resolved path; a hub id or
    ``"demo"`` unchanged. Example: ``normalise_model("./m") == normalise_model(os.path.abspath("m"))``."""
    if model not in SHIPPED_MODELS and _looks_local(model) and Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve())
    return model


def check_model_arg(model: str) -> str:
    """A local model folder (checked: exists, has config.json) as an absolute path, or a hub id unchanged."""
    m = model
    if _looks_local(m):
        path = Path(m).expanduser().resolve()
        if not path.is_dir():
            raise InputError(f"model folder {m} does not exist")
        if not (path / "config.json").is_file():
            raise InputError(f"model folder {m} has no config.json (expected a transformers save_pretrained folder)")
        return str(path)
    return m


__all__ = ["PAPER_SELECTORS", "RunConfig", "normalise_model", "check_model_arg"]
