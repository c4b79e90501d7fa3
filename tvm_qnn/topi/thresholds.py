# SPDX-License-Identifier: Apache-2.0
"""Requantization as integer thresholds on the accumulator (FINN's MultiThreshold idea).

A quantized layer's float32 epilogue ``q = clip(rint((acc * m + b, clamped) / s) + z)`` is a
monotone step function of the integer accumulator: non-decreasing when ``m >= 0``,
non-increasing when ``m < 0`` (``s > 0``). With few output codes it is therefore cheaper to
precompute, per channel, the accumulator values where the code steps up and count how many the
accumulator reaches, ``q = base + sum_k [acc >= t_k]``: a few integer compares instead of a
float multiply, add, divide and round. The thresholds are found here by bisection on
:func:`tvm_qnn.reference.requantize` itself, so the result equals the float reference for every
accumulator value, not only approximately.

Channels with ``m < 0`` are mirrored (``acc → -acc``) so every channel counts upwards; the
caller negates that channel's accumulator constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .requantize import Requantize

# More output codes than this keep the float epilogue: each code costs one compare per element.
# Measured on Zen 4 (one core, 1x1 convs of 32-64 channels, where the epilogue weighs most):
# 3-bit outputs (7 steps) 0.28 ms with thresholds, 0.38 ms float; 4-bit ones (15 steps) 0.63
# ms with thresholds, 0.34 ms float (MobileNet-v1 4b: 9.2 -> 7.2 ms from 15 to 7).
MAX_THRESHOLDS = 7


@dataclass(frozen=True)
class Thresholds:
    """Per-channel step points of a requantize epilogue, in the ``2 * acc`` domain.

    ``q = base[c] + #{k : s[c] * 2acc >= values[c, k]}`` where ``s[c] = -1`` for the channels
    in ``mirrored`` and ``+1`` otherwise.
    """

    values: np.ndarray  # [OC, K] int64, even numbers or the int64 ceiling (never reached)
    base: np.ndarray  # [OC] int64: the code below the first threshold
    mirrored: np.ndarray  # [OC] bool


def requantize_thresholds(mscale, output: Requantize, acc_bound: int,
                          max_thresholds: int = MAX_THRESHOLDS) -> Thresholds | None:
    """Thresholds equivalent to ``output`` (a quantized :class:`~.requantize.Requantize`) after
    the per-channel scale ``mscale``, for ``|acc| <= acc_bound``.

    Returns None when the epilogue is not a monotone step function with 1 to
    ``max_thresholds`` steps over that range (non-finite or non-positive scales, many codes,
    a constant).
    """
    mscale = np.asarray(mscale, np.float32)
    bias = np.asarray(output.bias, np.float32)
    out_scale = np.asarray(output.out_scale, np.float32)
    if not (np.all(np.isfinite(mscale)) and np.all(np.isfinite(bias))
            and np.all(np.isfinite(out_scale)) and np.all(out_scale > 0)):
        return None
    mirrored = mscale < 0
    sign = np.where(mirrored, -1, 1).astype(np.int64)

    def code(a):  # the code at mirrored accumulator ``a`` ([OC, ...] int64)
        acc = sign.reshape((-1,) + (1,) * (a.ndim - 1)) * a
        return output.apply(acc, mscale, channel_axis=0)

    oc = mscale.shape[0]
    lo = np.full((oc, 1), -acc_bound, np.int64)
    hi = np.full((oc, 1), acc_bound, np.int64)
    base, top = code(lo)[:, 0], code(hi)[:, 0]
    steps = int((top - base).max(initial=0))
    if not 0 < steps <= max_thresholds:  # 0: a constant output (kept as the float epilogue)
        return None
    # Bisection for the smallest a with code(a) >= base + k (a = bound + 1: never).
    target = base[:, None] + np.arange(1, steps + 1)[None, :]
    left = np.broadcast_to(lo, target.shape).copy()
    right = np.broadcast_to(hi + 1, target.shape).copy()
    while np.any(left < right):
        mid = (left + right) // 2
        ok = code(np.minimum(mid, acc_bound)) >= target
        ok &= mid <= acc_bound
        right = np.where(ok & (left < right), mid, right)
        left = np.where(~ok & (left < right), mid + 1, left)
    never = np.iinfo(np.int64).max
    values = np.where(left > acc_bound, never, 2 * left)
    return Thresholds(values.astype(np.int64), base.astype(np.int64), mirrored)
