"""Exceptions raised by esn_lens; each names the input and what was expected."""


class ESNLensError(Exception):
    """Base class of esn_lens errors."""


class InputError(ESNLensError, ValueError):
    """Bad user input (audio, labels, indices, arguments)."""


class IncompatibleError(ESNLensError, ValueError):
    """A saved object (stats, neuron set, checkpoint) does not match the model, site or run."""


class UnsupportedModelError(ESNLensError, TypeError):
    """No registered adapter fits the model."""


class CorruptFileError(ESNLensError, ValueError):
    """A file esn_lens wrote cannot be read back (truncated, foreign or damaged)."""


class MissingFileError(ESNLensError, FileNotFoundError):
    """A file esn_lens was asked to read does not exist (still a ``FileNotFoundError``)."""


class TraceOrderError(InputError):
    """A trace asked for a site after the model ran past it (values: forward order; gradients: reverse order)."""
