"""``import esn_lens`` stays light: adapters import their model and processor classes on use (issue #15, item 9)."""
from __future__ import annotations

import subprocess
import sys

from esn_lens.testing import build_tiny


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_import_esn_lens_loads_no_model_or_processor_classes():
    mods = _modules_after("import esn_lens, esn_lens.cli")
    assert "esn_lens.adapters.qwen_omni" in mods and "esn_lens.adapters.kimi_audio" in mods  # registered
    heavy = {"transformers.processing_utils", "transformers.models.qwen2_5_omni.processing_qwen2_5_omni",
             "transformers.models.qwen2.modeling_qwen2", "transformers.modeling_utils"}
    assert not heavy & mods, sorted(heavy & mods)


def test_audio_only_omni_processor_is_exported_and_built_on_use(tmp_path):
    from esn_lens.adapters import AudioOnlyOmniProcessor
    from esn_lens.adapters.qwen_omni import AudioOnlyOmniProcessor as same
    from transformers import Qwen2_5OmniProcessor

    assert AudioOnlyOmniProcessor is same and issubclass(AudioOnlyOmniProcessor, Qwen2_5OmniProcessor)
    assert AudioOnlyOmniProcessor.__module__ == "esn_lens.adapters.qwen_omni"
    _, proc = build_tiny("qwen2_5_omni_thinker")
    assert type(proc) is AudioOnlyOmniProcessor and proc.image_processor is None
    proc.save_pretrained(tmp_path)
    back = AudioOnlyOmniProcessor.from_pretrained(str(tmp_path))
    assert back.tokenizer.get_vocab() == proc.tokenizer.get_vocab()
    assert back.feature_extractor.sampling_rate == 16000


def test_tiny_kimia_is_its_remote_code_class():
    model, _ = build_tiny("kimi_audio")
    assert type(model).__name__ == "MoonshotKimiaForCausalLM" and len(model.model.mimo_layers) == 1
    assert type(model).__module__ == "esn_lens.testing.kimia_remote.modeling_moonshot_kimia"
