# SPDX-License-Identifier: Apache-2.0
"""A plain integer conv2d for layers with many branches, behind the bit-serial epilogue.

An M-bit × K-bit layer costs M·K popcounts per word of reduction; from some M·K on, one int32
multiply-add per tap is cheaper (``Layout.integer_min_branches``). This kernel computes the
same blocked accumulator as the bit-serial conv (:mod:`.branches`), so the same schedule and
epilogue (:mod:`.epilogue`) serve it.
"""

from __future__ import annotations

from tvm import te, tirx

from .attrs import BRANCH_BLOCK, INLINE_ATTR, INT_INPUT_BLOCK
from .epilogue import Epilogue, conv_epilogue


def integer_conv2d(data: te.Tensor, weight: te.Tensor, epi: Epilogue, *params, zero_point: int,
                   groups: int, pads: tuple[int, int, int, int], strides: tuple[int, int],
                   dilation: tuple[int, int], out_size: tuple[int, int],
                   channels_last: bool = False, channels_last_input: bool = False) -> te.Tensor:
    """Plain integer conv2d with the same fused epilogue (layers with many branches).

    ``acc = sum (x - z_x) (w - z_w)`` in int32; padding holds ``z_x`` (0 after the shift). The
    accumulator takes the place of the branch sums ``P`` (block ``branch_popcount``, same
    blocked layout), so the CPU schedule of the bit-serial conv serves it unchanged, and the
    epilogue constants make ``2 acc = 2 P + 2 B``.

    Parameters
    ----------
    data : te.Tensor
        ``[N, C, H, W]`` integer codes (``[N, H, W, C]`` with ``channels_last_input``).
    weight : te.Tensor
        ``[OC / OCi, Cg, KH, KW, OCi]`` int32, the weight zero-point already subtracted.
    epi : Epilogue
        The epilogue constants (``OC`` is their length).
    *params : te.Tensor
        The tensors of ``epi.tensor_params()``, in order.
    zero_point : int
        ``z_x``.
    groups : int
        Conv groups.
    pads, strides, dilation, out_size : tuple of int
        ``(top, left, bottom, right)``, the conv's strides and dilation, ``(OH, OW)``.
    channels_last : bool
        Write NHWC instead of NCHW (:func:`~.epilogue.conv_epilogue`).
    channels_last_input : bool
        ``data`` is NHWC (a channels-last producer).

    Returns
    -------
    te.Tensor
        ``[N, OC, OH, OW]`` (or ``[N, OH, OW, OC]``) of ``epi.out_dtype``.
    """
    if channels_last_input:
        n, h, w, c = (int(s) for s in data.shape)
    else:
        n, c, h, w = (int(s) for s in data.shape)
    _, cg, kh, kw, oc_inner = (int(s) for s in weight.shape)
    top, left, bottom, right = pads
    out_channels = int(epi.neg_d.shape[0])
    ocg = out_channels // groups

    def shifted(nn, ch, yy, xx):
        inside = tirx.all(yy >= top, yy < top + h, xx >= left, xx < left + w)
        y = tirx.max(tirx.min(yy - top, h - 1), 0)
        x = tirx.max(tirx.min(xx - left, w - 1), 0)
        at = (nn, y, x, ch) if channels_last_input else (nn, ch, y, x)
        value = data[at].astype("int32") - zero_point
        return tirx.if_then_else(inside, value, tirx.const(0, "int32"))

    hp, wp = h + top + bottom, w + left + right
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    if cg == 1 and ocg == 1 and oc_inner > 1:
        # Depthwise: a block's lanes are OCi channels, each reading its own input channel, so
        # the input is blocked the same way ([N, C/OCi, Hp, Wp, OCi]): one vector load a tap.
        # NHWC codes are that layout already: the stage is inlined into the taps' loads (a
        # 56x56x128 layer 0.25 -> 0.21 ms, 112x112x64 stride 2 0.29 -> 0.10 ms, Zen 4).
        xs = te.compute((n, c // oc_inner, hp, wp, oc_inner),
                        lambda nn, cb, yy, xx, ci: shifted(nn, cb * oc_inner + ci, yy, xx),
                        name=INT_INPUT_BLOCK,
                        attrs={INLINE_ATTR: 1} if channels_last_input else None)

        def acc(nn, ob, yy, xx, oi):
            return te.sum(xs[nn, ob, yy * strides[0] + ry * dilation[0],
                             xx * strides[1] + rx * dilation[1], oi]
                          * weight[ob, 0, ry, rx, oi], axis=[ry, rx])
    else:
        xs = te.compute((n, c, hp, wp), shifted, name=INT_INPUT_BLOCK)
        rc = te.reduce_axis((0, cg), name="rc")

        def acc(nn, ob, yy, xx, oi):
            g = (ob * oc_inner + oi) // ocg
            return te.sum(xs[nn, g * cg + rc, yy * strides[0] + ry * dilation[0],
                             xx * strides[1] + rx * dilation[1]] * weight[ob, rc, ry, rx, oi],
                          axis=[rc, ry, rx])

    p = te.compute((n, out_channels // oc_inner) + tuple(out_size) + (oc_inner,), acc,
                   name=BRANCH_BLOCK)
    return conv_epilogue(p, None, epi, params, out_channels, groups, channels_last)
