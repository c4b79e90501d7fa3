# SPDX-License-Identifier: Apache-2.0
"""What a compiled model accepts as a run-time input, checked once before every run.

numpy would convert anything: 256 into a ``uint8`` input wraps to 0, ``True`` becomes 1.0, a
complex array loses its imaginary part, an object array converts element by element. A
compiled model instead takes, for an input of dtype

* float (``float32``, ...): float arrays (wider floats are rounded to it, as numpy does) and
  integer arrays whose values the float holds exactly; every value finite. NaN and infinity
  are refused: the compiled quantization is not made to treat them as onnxruntime does
  (measured on a W2A2 QCDQ conv: one NaN pixel changes outputs by 8 against onnxruntime).
* integer (``int8``, ``uint8``, ...): integer arrays whose values lie in the dtype's range.
  Floats are refused, integral or not: rounding is the caller's choice.

Anything else (bool, complex, object, strings, dates) is refused. Each refusal is an
:class:`~tvm_qnn.errors.InputError` naming the input and the problem.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def _refuse(name: str, dtype: np.dtype, problem: str) -> InputError:
    return InputError(f"input '{name}' ({dtype}): {problem}")


def check_input(name: str, shape: tuple[int, ...], dtype: str, value) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype``, or an :class:`InputError` saying why
    the model cannot take it (the rules are in this module's docstring)."""
    want = np.dtype(dtype)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists, unconvertible objects
        raise _refuse(name, want, f"not an array ({err})") from None
    if tuple(arr.shape) != tuple(shape):
        raise InputError(f"input '{name}' has shape {arr.shape}; expected {tuple(shape)}")
    kind, given = want.kind, arr.dtype
    if kind not in "iuf":  # a bool or other input: nothing to check beyond numpy's cast
        return np.ascontiguousarray(arr.astype(want))
    if given.kind not in "iuf" or (kind in "iu" and given.kind == "f"):
        accepted = "integer arrays" if kind in "iu" else "float or integer arrays"
        raise _refuse(name, want, f"got an array of {given}; it takes {accepted}")
    if kind == "f":
        if given.kind == "f" and not np.isfinite(arr).all():
            bad = arr[~np.isfinite(arr)][0]
            raise _refuse(name, want, f"holds {bad} (NaN and infinity are refused: the "
                                      "compiled quantization would not treat them as ONNX does)")
        out = arr.astype(want)
        inexact = out.astype(given) != arr if given.kind in "iu" else None
        if inexact is not None and inexact.any():
            raise _refuse(name, want, f"value {arr[inexact][0]} ({given}) is not exact in "
                                      f"{want}")
        return np.ascontiguousarray(out)
    if not np.can_cast(given, want, "safe") and arr.size:
        lim = np.iinfo(want)
        lo, hi = arr.min(), arr.max()
        if lo < lim.min or hi > lim.max:
            bad = lo if lo < lim.min else hi
            raise _refuse(name, want, f"value {bad} is outside its range [{lim.min}, "
                                      f"{lim.max}]")
    return np.ascontiguousarray(arr.astype(want))


__all__ = ["check_input"]
