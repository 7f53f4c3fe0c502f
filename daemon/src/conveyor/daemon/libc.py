"""Functions of the C library that Python's ``os`` module does not offer."""

from __future__ import annotations

import ctypes
import functools
from typing import Any


@functools.cache
def glibc(name: str, *argtypes: type[ctypes.c_int] | type[ctypes.c_size_t]) -> Any:
    """glibc's function ``name`` (returning an int), or None when the C
    library has no such function (musl has no ``mallopt`` or
    ``malloc_trim`` to speak of)."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function
