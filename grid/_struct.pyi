# The compiled struct codec has exactly the pure twin's API (tests/codec/test_twins.py
# checks it), so its signatures are the twin's: editors and mypy read them here.
from grid._struct_py import *  # noqa: F403
from grid._struct_py import __all__ as __all__
