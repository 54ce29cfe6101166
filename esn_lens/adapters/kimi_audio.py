"""Kimi-Audio (``MoonshotKimiaForCausalLM``, hub code loaded with trust_remote_code), end to end.

The model reads two token streams of equal length -- ``input_ids`` (the audio stream: control tokens and discrete
audio tokens) and ``text_input_ids`` (the text stream) -- plus Whisper features that its ``vq_adaptor`` mixes into
the continuous (audio-token) positions. Its 28 text layers are ``model.layers``; the ``mimo_layers`` branch
only produces audio tokens and is not part of the units. Logits are the pair (audio, text): answers come from
the text logits.

The release embeds one row at a time; the adapter batches rows (left or right padding) by building
``inputs_embeds`` with the model's own modules exactly as the model does for each row alone, and calls the model
with them, ``attention_mask`` and ``position_ids``. It does so through :class:`KimiaTextStream`, a thin module
around the model that is what the Lens wraps and calls (its ``.logits`` are the text logits; its ``generate``
produces the text stream greedily, the audio stream blank). Inputs come from :class:`KimiaPrompter`: the
Kimi-Audio toolkit's prompt manager (``kimia_infer``) or any callable returning the same streams.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..errors import InputError
from ..vocab import PositionMasks
from .base import Adapter, register_adapter

KIMIA_INSTALL = ("Kimi-Audio inputs are built by its toolkit kimia_infer: pip install "
                 "git+https://github.com/MoonshotAI/Kimi-Audio (or pass Lens(model, KimiaPrompter(your_callable, "
                 "tokenizer=..., extra_tokens=...)))")


class KimiaPrompter:
    """Builds Kimi-Audio's inputs (two streams, continuous mask, features) from a clip and a prompt.

    ``source``: the toolkit's ``KimiAPromptManager`` (anything with ``get_prompt(messages, output_type)``), or a
    callable ``source(messages) -> content``; a content has ``to_tensor()`` -> (audio stream, text stream,
    continuous mask) and ``continuous_feature`` (a list of feature tensors), or is a dict with keys
    ``audio_ids``, ``text_ids``, ``is_continuous_mask`` and ``features``. Messages are the toolkit's:
    ``[{"role": "user", "message_type": "text", "content": prompt}, {"role": "user", "message_type": "audio",
    "content": wav_path}]``. ``tokenizer`` / ``extra_tokens`` default to the source's ``text_tokenizer`` /
    ``extra_tokens`` (``kimia_text_blank``, ``kimia_text_eos`` ids). With the toolkit the source is
    ``KimiAPromptManager(path, kimia_token_offset=model.config.kimia_token_offset)``; here, the tiny stand-in's.
    Example::

        from esn_lens import Lens
        from esn_lens.testing import build_tiny
        model, prompter = build_tiny("kimi_audio")
        pm = prompter.source
        lens = Lens(model, KimiaPrompter(pm.get_prompt, tokenizer=pm.text_tokenizer, extra_tokens=pm.extra_tokens))
    """

    sampling_rate = 16000

    def __init__(self, source: Any = None, *, tokenizer: Any = None, extra_tokens: Any = None):
        self.source = source
        self.tokenizer = tokenizer if tokenizer is not None else getattr(source, "text_tokenizer", None)
        self.extra_tokens = extra_tokens if extra_tokens is not None else getattr(source, "extra_tokens", None)

    def token(self, name: str) -> int:
        """The id of one of Kimi-Audio's extra tokens (``kimia_text_blank``, ``kimia_text_eos``, ...)."""
        x = self.extra_tokens
        val = x.get(name) if isinstance(x, dict) else getattr(x, name, None)
        if val is None:
            raise InputError(f"kimi_audio: the prompter's extra_tokens has no {name!r} (pass extra_tokens=... with it)")
        return int(val)

    def streams(self, messages: list[dict]) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """One prompt's ``(audio ids (seq,), text ids (seq,), continuous mask (seq,), features (n, d) or None)``."""
        if self.source is None:
            raise InputError(KIMIA_INSTALL)
        content = (self.source.get_prompt(messages, output_type="text") if hasattr(self.source, "get_prompt")
                   else self.source(messages))
        if isinstance(content, dict):
            a, t, c, feats = (content.get(k) for k in ("audio_ids", "text_ids", "is_continuous_mask", "features"))
            feats = [feats] if isinstance(feats, Tensor) else feats
        else:
            a, t, c = content.to_tensor()
            feats = content.continuous_feature
        a, t, c = (torch.as_tensor(x).reshape(-1) for x in (a, t, c))
        if not a.shape == t.shape == c.shape:
            raise InputError(f"kimi_audio: the two streams and the continuous mask differ in length "
                             f"({a.numel()}, {t.numel()}, {c.numel()})")
        f = torch.cat([torch.as_tensor(x).reshape(-1, x.shape[-1]) for x in feats], 0) if feats else None
        n = int(c.bool().sum())
        if (0 if f is None else f.shape[0]) != n:
            raise InputError(f"kimi_audio: {n} continuous positions but {0 if f is None else f.shape[0]} feature rows")
        return a.long(), t.long(), c.bool(), f

    def save_pretrained(self, path: "str | os.PathLike") -> None:
        """Save the text tokenizer (the prompt manager itself is rebuilt from the model folder)."""
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)


@dataclass
class KimiaTextOutput:
    """What :class:`KimiaTextStream` returns: ``logits`` = text logits; the audio logits and the cache beside."""

    logits: Tensor
    audio_logits: Tensor | None = None
    past_key_values: Any = None


class KimiaTextStream(nn.Module):
    """The module the Lens wraps for Kimi-Audio: batched embedding, the model, text logits; greedy text generation."""

    def __init__(self, kimia: nn.Module, adapter: "KimiAudioAdapter"):
        super().__init__()
        self.kimia = kimia
        self._adapter = [adapter]  # not a submodule

    def embeds(self, input_ids: Int[Tensor, "batch pos"], text_input_ids: Int[Tensor, "batch pos"] | None,
               is_continuous_mask: Tensor | None, whisper_feature: Float[Tensor, "batch n d_in"] | None,
               attention_mask: Tensor | None) -> Float[Tensor, "batch pos hidden"]:
        """The model's embedding of each row, for a batch: audio stream, adapted features on the continuous
        positions (``(e + adaptor(f)) * sqrt(2)``, the k-th feature row on the k-th such position), then the text
        stream's embedding added where the row's text stream (its valid positions) is not all zeros."""
        inner = self.kimia.model
        emb = inner.embed_tokens(input_ids)
        if whisper_feature is not None and is_continuous_mask is not None and bool(is_continuous_mask.any()):
            cont = is_continuous_mask.bool()
            adapted = inner.vq_adaptor(whisper_feature.to(emb.dtype))
            k = (cont.long().cumsum(1) - 1).clamp(min=0)
            placed = adapted.gather(1, k[..., None].expand(-1, -1, adapted.shape[-1]))
            emb = torch.where(cont[..., None], (emb + placed) * math.sqrt(2.0), emb)
        if text_input_ids is not None:
            valid = attention_mask.bool() if attention_mask is not None else torch.ones_like(text_input_ids, dtype=torch.bool)
            has_text = (text_input_ids * valid).sum(1) != 0
            if bool(has_text.all()):
                emb = emb + inner.embed_tokens(text_input_ids)
            elif bool(has_text.any()):
                emb = torch.where(has_text[:, None, None], emb + inner.embed_tokens(text_input_ids), emb)
        return emb

    def forward(self, input_ids: Tensor, text_input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, is_continuous_mask: Tensor | None = None,
                whisper_feature: Tensor | None = None, past_key_values: Any = None, use_cache: bool = False
                ) -> KimiaTextOutput:
        emb = self.embeds(input_ids, text_input_ids, is_continuous_mask, whisper_feature, attention_mask)
        audio_logits, text_logits, cache = self.kimia(inputs_embeds=emb, attention_mask=attention_mask,
                                                      position_ids=position_ids, past_key_values=past_key_values,
                                                      use_cache=use_cache, return_dict=False)[:3]
        return KimiaTextOutput(text_logits, audio_logits, cache)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, text_input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                 is_continuous_mask: Tensor | None = None, whisper_feature: Tensor | None = None,
                 max_new_tokens: int = 20, **_: Any) -> Int[Tensor, "batch seq"]:
        """Greedy text generation as the toolkit does for text output: each step feeds the argmax of the text logits
        to the text stream and a blank to the audio stream; a row stops at the text EOS (then blanks). Returns the
        text stream, prompt included (batch, seq + new)."""
        prompter = self._adapter[0].prompter
        blank, eos = prompter.token("kimia_text_blank"), prompter.token("kimia_text_eos")
        out = self(input_ids, text_input_ids, attention_mask, position_ids, is_continuous_mask, whisper_feature,
                   use_cache=True)
        seq, mask, pos = text_input_ids, attention_mask, position_ids[:, -1:]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for step in range(int(max_new_tokens)):
            nxt = out.logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, blank), nxt)
            seq = torch.cat([seq, nxt[:, None]], 1)
            done = done | (nxt == eos)
            if bool(done.all()) or step == int(max_new_tokens) - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = pos + 1
            out = self(torch.full_like(nxt[:, None], blank), nxt[:, None], mask, pos,
                       past_key_values=out.past_key_values, use_cache=True)
        return seq


@register_adapter("kimi_audio")
class KimiAudioAdapter(Adapter):
    """Kimi-Audio-7B(-Instruct): text layers at ``model.layers`` (``mimo_layers`` excluded), two token streams.

    Positions: ``audio`` = the audio-token (continuous) positions; ``prompt_text`` = text-stream tokens of the user's
    prompt; ``special`` = control tokens (message starts and ends, media begin/end) and blanks.
    """

    layers_path = "kimia.model.layers"
    lm_head_path = "kimia.lm_head"
    audio_token = "<|im_media_begin|>"  # marks where a clip goes; the adapter builds the streams itself
    class_names = ("MoonshotKimiaForCausalLM",)
    model_types = ("kimi_audio", "kimia")
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title='Kimi-Audio',
        mlp="Qwen2MLP: pre = gate_proj out, act = SiLU(gate) (the paper's), post = act * up_proj (down_proj input); the mimo branch (audio tokens) is not part of the units",
        audio='continuous positions (audio tokens between media begin and end, 12.5 per second)',
        inputs="the toolkit's prompt manager (`kimia_infer`) or a callable; batched `inputs_embeds` built as the model does per row",
        tested="tiny remote-code stand-in: every row = that row alone through the model's own forward; sites, stats, edits, toolkit-style generation vs plain hooks; `esn-lens run --trust-remote-code` on a saved folder",
        limits="needs `--trust-remote-code` and the toolkit; the release's attention is flash-attention only (GPU, half "
               "precision), and its modeling file imports transformers internals that 5.x removed "
               "(`modeling_attn_mask_utils`): the real checkpoint loads with transformers 4.x or a patched file; "
               "`hook_embed` is the audio stream's embedding",
    )

    def __init__(self, model: nn.Module, processor: Any = None):
        self._stream = KimiaTextStream(model, self)
        if processor is not None and not isinstance(processor, KimiaPrompter):
            processor = KimiaPrompter(processor) if (hasattr(processor, "get_prompt") or callable(processor)
                                                     and not hasattr(processor, "encode")) else \
                KimiaPrompter(None, tokenizer=processor)
        super().__init__(model, processor)

    def root(self) -> nn.Module:
        return self._stream

    @property
    def prompter(self) -> KimiaPrompter:
        if not isinstance(self.processor, KimiaPrompter):
            raise InputError(KIMIA_INSTALL)
        return self.processor

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> KimiaPrompter:
        """The toolkit's prompt manager for a Kimi-Audio folder, in a :class:`KimiaPrompter`; without the toolkit, a
        prompter that refuses to build inputs with one line naming the install."""
        import inspect
        import json

        try:
            from kimia_infer.api.prompt_manager import KimiAPromptManager
        except ImportError:
            tok = None
            try:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            except Exception:  # noqa: BLE001 - a tokenizer is a convenience here; inputs need the toolkit anyway
                pass
            return KimiaPrompter(None, tokenizer=tok)
        with open(os.path.join(path, "config.json")) as f:
            offset = json.load(f).get("kimia_token_offset")
        kw: dict[str, Any] = {}
        if "kimia_text_audiodelaytokens" in inspect.signature(KimiAPromptManager).parameters:
            kw["kimia_text_audiodelaytokens"] = 6  # the toolkit's own value (KimiAudio sets 6)
        return KimiaPrompter(KimiAPromptManager(model_path=path, kimia_token_offset=offset, **kw))

    # -------------------------------------------------------------- inputs
    def messages(self, prompt: str, wav_path: str | None) -> list[dict]:
        """The toolkit's chat for one clip: the question as a text message, then the clip as an audio message."""
        msgs = [{"role": "user", "message_type": "text", "content": prompt}]
        if wav_path is not None:
            msgs.append({"role": "user", "message_type": "audio", "content": wav_path})
        return msgs

    def build_inputs(self, audios: Sequence[np.ndarray] | None, prompts: Sequence[str], *,
                     padding_side: str = "left", system: str | None = None) -> dict[str, Tensor]:
        """Both streams, the continuous mask and the features of each (clip, prompt), padded to one length.

        ``position_ids`` count each row's valid positions from 0, as the row alone has them.
        """
        import soundfile as sf

        if system:
            raise InputError("kimi_audio: Kimi-Audio's chat has no system prompt; put it in the prompt text")
        prompter = self.prompter
        rows = []
        with tempfile.TemporaryDirectory(prefix="esn_kimia_") as tmp:
            for i, prompt in enumerate(prompts):
                wav = None
                if audios is not None:
                    wav = os.path.join(tmp, f"clip{i}.wav")
                    sf.write(wav, np.asarray(audios[i], dtype=np.float32), prompter.sampling_rate, subtype="FLOAT")
                rows.append(prompter.streams(self.messages(prompt, wav)))
        return self.pad_rows(rows, padding_side)

    def pad_rows(self, rows: list[tuple[Tensor, Tensor, Tensor, Tensor | None]], padding_side: str = "left"
                 ) -> dict[str, Tensor]:
        """Stack per-row streams (from :meth:`KimiaPrompter.streams`) into one padded batch of model inputs."""
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        B, P = len(rows), max(r[0].numel() for r in rows)
        blank = self.prompter.token("kimia_text_blank")
        ids = torch.full((B, P), blank, dtype=torch.long)
        text = torch.full((B, P), blank, dtype=torch.long)
        cont = torch.zeros(B, P, dtype=torch.bool)
        att = torch.zeros(B, P, dtype=torch.long)
        feats = [r[3] for r in rows if r[3] is not None]
        N = max([f.shape[0] for f in feats], default=0)
        wf = torch.zeros(B, N, feats[0].shape[-1]) if feats else None
        for b, (a, t, c, f) in enumerate(rows):
            n = a.numel()
            sl = slice(P - n, P) if padding_side == "left" else slice(0, n)
            ids[b, sl], text[b, sl], cont[b, sl], att[b, sl] = a, t, c, 1
            if f is not None:
                wf[b, :f.shape[0]] = f.float()
        out = dict(input_ids=ids, text_input_ids=text, attention_mask=att,
                   position_ids=(att.cumsum(1) - 1).clamp(min=0), is_continuous_mask=cont)
        if wf is not None:
            out["whisper_feature"] = wf
        return out

    def position_masks(self, inputs: dict[str, Tensor]) -> PositionMasks:
        """Padding (attention mask 0), audio (continuous positions), prompt text (text-stream tokens: the user's
        question, as only user turns are built), special (everything else valid: control tokens, blanks)."""
        padding = inputs["attention_mask"] == 0
        audio = inputs["is_continuous_mask"].bool() & ~padding
        tok = self.tokenizer
        specials = set(getattr(tok, "all_special_ids", [])) | set(self._extra_special_ids())
        specials.add(self.prompter.token("kimia_text_blank"))
        text = inputs["text_input_ids"]
        is_text = ~torch.isin(text, torch.tensor(sorted(specials), dtype=text.dtype)) & ~padding & ~audio
        special = ~padding & ~audio & ~is_text
        return PositionMasks(padding=padding, special=special, audio=audio, prompt_text=is_text, prompt_known=True)
