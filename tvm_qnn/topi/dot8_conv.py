# SPDX-License-Identifier: Apache-2.0
"""A u8 × s8 dot-product conv2d: the kernel family of CPUs where byte multiply-adds beat
popcounts (``vpmaddubsw`` on AVX2, ``vpdpbusd`` with VNNI) for layers of several branches.

The activations enter as unsigned bytes ``u = q_x - lo`` (padding holds ``z'_x = z_x - lo``,
the code of real zero), the weights as signed bytes ``w' = q_w - z_w``, so that over a window

    acc = sum (q_x - z_x)(q_w - z_w) = sum u w' - z'_x sum w'

with the sum of the weights over every tap (padded ones included, where ``u = z'_x``). The
kernel computes ``Q = sum u w'`` four channels at a time (a 4-byte group of one input position
against ``OCi`` output channels: one dot-product instruction), and the epilogue constants make
``2 acc = 2 Q - 2 z'_x sum w' + 2 B`` (B: QLinearConv's int32 bias), exactly, with no row-sum
term. Eligible when the instruction cannot saturate: ``2 (2^M - 1) max|w'| <= 32767``
(``vpmaddubsw`` adds two products in int16).

A conv of fewer input channels than a dot step takes (an image's 1 or 3) would pad each tap's
channels to 4, most of every step zeros: its window's taps are folded into the channels
instead (:func:`folds_taps`), the input stage gathering each output position's window
(``KH·KW·C`` bytes, padded to a multiple of 4) and the kernel running as a 1x1 conv over
them: 12 bytes per position instead of 36 for a 3x3 window of one channel.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .attrs import BRANCH_BLOCK, DOT8_GROUPS_ATTR, DOT8_INPUT_BLOCK, DOT8_WINDOW_ATTR
from .epilogue import Epilogue, conv_epilogue

#: Input channels per dot-product step (four bytes against four weights).
DOT_K = 4
#: At most this many 4-channel groups per dot step (see :func:`dot8_groups`).
DOT8_MOST_GROUPS = 4


def dot8_eligible(act_bits: int, weight_offsets: np.ndarray, groups: int) -> bool:
    """Whether a conv with ``act_bits``-bit codes and weights ``w' = q_w - z_w`` fits the
    u8 × s8 kernel: one group (depthwise layers keep the popcount kernels), ``w'`` a signed
    byte, no int16 saturation of a product pair, and an int32 sum over the whole window."""
    span = int(np.abs(weight_offsets).max(initial=0))
    taps = int(np.prod(weight_offsets.shape[1:]))
    code = (1 << act_bits) - 1
    return (groups == 1 and act_bits <= 8 and weight_offsets.min(initial=0) >= -128
            and weight_offsets.max(initial=0) <= 127
            and 2 * code * span <= 32767 and taps * code * span < 2**31)


def dot8_groups(act_bits: int, weight_offsets: np.ndarray, channel_groups: int,
                most: int = DOT8_MOST_GROUPS) -> int:
    """4-channel groups one dot step may add in int16 before widening: each group adds a
    product pair of at most ``2 (2^M - 1) max|w'|`` to an int16 lane, so at most
    ``32767 // that`` of them; the largest divisor of ``channel_groups`` (at most ``most``)
    within that. ``most`` = 4: measured on Zen 3 (AVX2, W2A2 suite convs, one core), 1, 2,
    4, 8 and 16 groups per step took 1.45, 1.16, 1.11, 1.12 and 1.31 ms on conv28: longer
    steps keep more weight vectors live than the 16 ymm registers hold."""
    pair = 2 * ((1 << act_bits) - 1) * max(1, int(np.abs(weight_offsets).max(initial=0)))
    cap = max(1, min(most, 32767 // pair, channel_groups))
    return max(g for g in range(1, cap + 1) if channel_groups % g == 0)


def folds_taps(in_channels: int, window: tuple[int, int]) -> bool:
    """Whether a conv's window taps go into the dot steps' channel groups (see the module
    docstring): fewer channels than a step takes, and more than one tap."""
    return in_channels < DOT_K and window[0] * window[1] > 1


def pack_dot8_weights(offsets: np.ndarray, oc_block: int) -> np.ndarray:
    """``w'[OC, C, KH, KW]`` → int8 ``[OC / OCi, KH, KW, ceil(C / 4), OCi, 4]``: the ``OCi × 4``
    bytes one dot-product step reads, channels past ``C`` zero. With :func:`folds_taps`, the
    window is one tap of ``KH·KW·C`` channels in ``(ky, kx, c)`` order:
    ``[OC / OCi, 1, 1, ceil(KH·KW·C / 4), OCi, 4]``."""
    if folds_taps(offsets.shape[1], offsets.shape[2:]):
        oc = offsets.shape[0]
        offsets = np.transpose(offsets, (0, 2, 3, 1)).reshape(oc, -1, 1, 1)
    oc, c, kh, kw = offsets.shape
    cq = -(-c // DOT_K)
    w = np.zeros((oc, cq * DOT_K, kh, kw), np.int8)
    w[:, :c] = offsets
    w = w.reshape(oc // oc_block, oc_block, cq, DOT_K, kh, kw)
    return np.ascontiguousarray(np.transpose(w, (0, 4, 5, 2, 1, 3)))


def dot8_conv2d(data: te.Tensor, weight: te.Tensor, epi: Epilogue, *params, act_lo: int,
                pad_code: int, pads: tuple[int, int, int, int], strides: tuple[int, int],
                dilation: tuple[int, int], out_size: tuple[int, int], groups_per_step: int = 1,
                channels_last: bool = False, channels_last_input: bool = False,
                window: tuple[int, int] | None = None) -> te.Tensor:
    """u8 × s8 conv2d (one group) with the fused epilogue.

    Parameters
    ----------
    data : te.Tensor
        ``[N, C, H, W]`` integer codes (``[N, H, W, C]`` with ``channels_last_input``).
    weight : te.Tensor
        :func:`pack_dot8_weights` output, ``[OC / OCi, KH, KW, Cq, OCi, 4]`` int8.
    epi : Epilogue
        The epilogue constants (``2 acc = 2 Q + const2``).
    *params : te.Tensor
        The tensors of ``epi.tensor_params()``, in order.
    act_lo, pad_code : int
        ``u = code - act_lo``; padded positions hold ``u = pad_code`` (``z'_x``).
    pads, strides, dilation, out_size : tuple of int
        ``(top, left, bottom, right)``, the conv's strides and dilation, ``(OH, OW)``.
    groups_per_step : int
        :func:`dot8_groups`: 4-channel groups a dot step sums in int16, recorded on the
        accumulation block (:data:`~.attrs.DOT8_GROUPS_ATTR`) for the schedule.
    channels_last : bool
        Write NHWC instead of NCHW (:func:`~.epilogue.conv_epilogue`).
    channels_last_input : bool
        ``data`` is NHWC (a channels-last producer): the byte stage below copies rows.
    window : tuple of int, optional
        The conv's ``(KH, KW)`` when ``weight`` holds them folded into its channels
        (:func:`folds_taps`): the byte stage then gathers each output position's window.

    Returns
    -------
    te.Tensor
        ``[N, OC, OH, OW]`` (or ``[N, OH, OW, OC]``) of ``epi.out_dtype``.
    """
    if channels_last_input:
        n, h, w, c = (int(s) for s in data.shape)
    else:
        n, c, h, w = (int(s) for s in data.shape)
    _, kh, kw, cq, oc_inner, _ = (int(s) for s in weight.shape)
    top, left, bottom, right = pads
    out_channels = int(epi.neg_d.shape[0])

    def code(nn, yy, xx, ch):
        # NHWC bytes, channels padded to a multiple of 4 (zero: their weights are zero too).
        inside = tirx.all(yy >= top, yy < top + h, xx >= left, xx < left + w)
        y = tirx.max(tirx.min(yy - top, h - 1), 0)
        x = tirx.max(tirx.min(xx - left, w - 1), 0)
        k = tirx.min(ch, c - 1)
        at = (nn, y, x, k) if channels_last_input else (nn, k, y, x)
        u = data[at].astype("int32") - act_lo
        u = tirx.if_then_else(inside, u, tirx.const(pad_code, "int32"))
        return tirx.if_then_else(ch < c, u, tirx.const(0, "int32")).astype("uint8")

    if window is None:
        xs = te.compute((n, h + top + bottom, w + left + right, cq * DOT_K), code,
                        name=DOT8_INPUT_BLOCK)
        steps, dilated = strides, dilation
    else:  # [N, OH, OW, K]: k = (ky KW + kx) C + ch, the window of each output position
        def tap(nn, yy, xx, k):
            t, ch = k // c, k % c
            ky, kx = t // window[1], t % window[1]
            value = code(nn, yy * strides[0] + ky * dilation[0],
                         xx * strides[1] + kx * dilation[1], ch)
            return tirx.if_then_else(k < window[0] * window[1] * c, value,
                                     tirx.const(0, "uint8"))

        xs = te.compute((n, *out_size, cq * DOT_K), tap, name=DOT8_INPUT_BLOCK,
                        attrs={DOT8_WINDOW_ATTR: 1})
        steps, dilated = (1, 1), (1, 1)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rq = te.reduce_axis((0, cq), name="rq")
    r4 = te.reduce_axis((0, DOT_K), name="r4")

    def acc(nn, ob, yy, xx, oi):
        a = xs[nn, yy * steps[0] + ry * dilated[0], xx * steps[1] + rx * dilated[1],
               rq * DOT_K + r4]
        return te.sum(a.astype("int32") * weight[ob, ry, rx, rq, oi, r4].astype("int32"),
                      axis=[ry, rx, rq, r4])

    p = te.compute((n, out_channels // oc_inner) + tuple(out_size) + (oc_inner,), acc,
                   name=BRANCH_BLOCK, attrs={DOT8_GROUPS_ATTR: groups_per_step})
    return conv_epilogue(p, None, epi, params, out_channels, 1, channels_last)


__all__ = ["DOT8_MOST_GROUPS", "DOT_K", "dot8_conv2d", "dot8_eligible", "dot8_groups",
           "folds_taps", "pack_dot8_weights"]
