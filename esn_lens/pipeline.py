"""The run (discover -> validate -> analyse), re-exported from :mod:`esn_lens.run` for existing imports."""
from .run import *  # noqa: F401,F403
from .run import __all__  # noqa: F401
from .run.folder import digest as _digest  # noqa: F401  (the name earlier versions exported)
