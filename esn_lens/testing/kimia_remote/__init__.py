"""A tiny stand-in of Kimi-Audio's hub code (``MoonshotKimiaForCausalLM``), saved beside its weights like the hub repo.

The two files here are copied into a saved folder by ``save_pretrained`` and loaded from there with
``trust_remote_code=True``; they import only torch and transformers (nothing from esn_lens).
"""
