# The compiled codec has exactly the pure twin's API (tests/codec/test_twins.py
# checks it), so its signatures are the twin's: editors and mypy read them here.
from grid._codec_py import *  # noqa: F403
from grid._codec_py import __all__ as __all__
from grid._codec_py import CRC_BACKEND as CRC_BACKEND  # "xxh3-inline" or "xxhash-package" here
from grid._codec_py import CRC_AVX2 as CRC_AVX2  # True where large CRCs use the AVX2 build
from grid._codec_py import _crc_use_avx2 as _crc_use_avx2
