# The compiled codec has exactly the pure twin's API (tests/codec/test_twins.py
# checks it), so its signatures are the twin's: editors and mypy read them here.
from grid._codec_py import *  # noqa: F403
from grid._codec_py import __all__ as __all__
from grid._codec_py import CRC_BACKEND as CRC_BACKEND  # "xxh3-inline" or "xxhash-package" here
