# SPDX-License-Identifier: Apache-2.0
"""Running a function with the C stack moved down, so that a timing is not one stack's luck.

Where a kernel keeps register spills on the stack, its speed can depend on where the stack
lies: on a Zen 4 core an ``x86:haswell`` lookup conv took 0.0127 ms at most stack offsets and
0.0146 ms in a band of 128-256 bytes per KiB (``docs/cpu_kernels.md`` §4d), and every process
starts at a random offset. A comparison made at one offset (a tuning re-time) can then rank two
kernels the other way round from what another process sees. :func:`call_at_stack_depth` runs
a function deeper in the stack by a chosen amount, with no native code of our own: it calls
the function through a ctypes callback given ``words`` extra integer arguments, which ctypes
and libffi lay out on the stack below the caller (measured on CPython 3.11 x86-64: 72 bytes
per argument over every 8 of them; alignment rounds a single one). :data:`STACK_DEPTHS` are
argument counts whose shifts spread over a 4 KiB page (0, 1296, 2592, 3888 bytes: 0, 272, 544,
816 within each KiB). The depth is relative to the caller, whose own depth depends on how it
was reached (a call from inside a generator that a C function consumes starts deeper).
"""

from __future__ import annotations

import ctypes
import functools

#: Extra arguments for the depths a timing is repeated at (see the module docstring).
STACK_DEPTHS = (0, 18, 36, 54)
#: ctypes refuses calls with more arguments than this (CPython's ``CTYPES_MAX_ARGCOUNT``).
MAX_WORDS = 1024 - 6

_REGISTER_ARGS = 6  # the x86-64 / AArch64 calling conventions pass this many in registers


@functools.lru_cache(maxsize=None)
def _prototype(words: int):
    return ctypes.CFUNCTYPE(None, *([ctypes.c_int64] * (_REGISTER_ARGS + words)))


def call_at_stack_depth(fn, words: int):
    """``fn()`` called with the stack ``words`` padding arguments deeper (0: just below a
    ctypes callback); returns what it returns and raises what it raises."""
    if not 0 <= words <= MAX_WORDS:
        raise ValueError(f"words={words}: from 0 to {MAX_WORDS} padding arguments")
    outcome = []

    def body(*_):
        try:
            outcome.append((True, fn()))
        except BaseException as err:  # noqa: BLE001 - handed back to the caller below
            outcome.append((False, err))

    callback = _prototype(words)(body)
    callback(*([0] * (_REGISTER_ARGS + words)))
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


__all__ = ["MAX_WORDS", "STACK_DEPTHS", "call_at_stack_depth"]
