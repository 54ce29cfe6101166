"""esn_lens: emotion-sensitive neurons in audio-language models."""
__version__ = "0.1.0"
