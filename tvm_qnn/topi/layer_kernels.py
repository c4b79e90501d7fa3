# SPDX-License-Identifier: Apache-2.0
"""A planned layer as TE: the kernel of :func:`~.layer.plan_layer`'s plan, whole.

:func:`layer_compute` builds ``pack → [window popcount] → branches + epilogue`` (or the
int8-dot / integer kernel with the same epilogue) as one PrimFunc's TE graph; the chain
helpers say what a layer can take from a channels-last producer; and
:func:`branch_epilogue_compute` is the host half of a layer offloaded to the accelerator.
"""

from __future__ import annotations

from tvm import te

from .bitpack import (
    pack_bitplanes_im2col,
    pack_bitplanes_nchw,
    pack_bitplanes_rows,
    patch_popcount,
    row_popcount,
    window_popcount,
    words_for,
)
from .branches import bitserial_conv2d_im2col, bitserial_conv2d_nchw, bitserial_dense
from .dot8_conv import dot8_conv2d, folds_taps
from .epilogue import epilogue_compute
from .integer_conv import integer_conv2d
from .layer import LayerPlan
from .lut_conv import lut_conv2d


def layer_compute(plan: LayerPlan, data: te.Tensor, weight: te.Tensor, *params: te.Tensor,
                  packed_input: bool = False, channels_last_input: bool = False,
                  channels_last_output: bool = False) -> te.Tensor:
    """TE of the whole layer: activation packing, optional window popcount, branches+epilogue.

    ``params`` are the tensors of ``plan.epilogue.tensor_params()``, in order. For a layer
    inside a chain: ``packed_input``, the data are already the (padded) bit-planes
    (:func:`packed_input_shape`; a bit-serial consumer, :func:`chains_channels_last`);
    ``channels_last_input``, the data are NHWC codes (an int8-dot or integer consumer,
    :func:`reads_channels_last`); ``channels_last_output``, the output is written NHWC for
    the next layer of the chain.
    """
    layer, epi, word_bits = plan.layer, plan.epilogue, plan.word_bits
    if layer.kind == "dense":
        packed = data if packed_input else pack_bitplanes_rows(
            data, layer.act_lo, layer.act_bits, word_bits, layer.act_shift)
        rowsum = row_popcount(packed) if epi.needs_rowsum else None
        return bitserial_dense(packed, weight, epi, *params, out_features=layer.out_channels,
                               rowsum=rowsum)
    kernel = tuple(int(s) for s in layer.weight.shape[2:])
    out_size = layer.output_shape[2:]
    if plan.conv_layout == "dot8":
        return dot8_conv2d(data, weight, epi, *params, act_lo=layer.act_lo,
                           pad_code=plan.pad_code, pads=layer.pads, strides=layer.strides,
                           dilation=layer.dilation, out_size=out_size,
                           groups_per_step=plan.dot8_groups,
                           channels_last=channels_last_output,
                           channels_last_input=channels_last_input,
                           window=kernel if folds_taps(layer.input_shape[1], kernel) else None)
    if plan.conv_layout == "integer":
        return integer_conv2d(data, weight, epi, *params, zero_point=layer.act_zero_point,
                              groups=layer.groups, pads=layer.pads, strides=layer.strides,
                              dilation=layer.dilation, out_size=out_size,
                              channels_last=channels_last_output,
                              channels_last_input=channels_last_input)
    if plan.conv_layout == "im2col":
        packed = pack_bitplanes_im2col(data, layer.act_lo, layer.act_bits, layer.groups,
                                       kernel, layer.strides, layer.dilation, layer.pads,
                                       plan.pad_code, out_size, word_bits, layer.act_shift)
        rowsum = patch_popcount(packed) if epi.needs_rowsum else None
        return bitserial_conv2d_im2col(packed, weight, epi, *params,
                                       out_channels=layer.out_channels, rowsum=rowsum,
                                       channels_last=channels_last_output)
    if packed_input:
        packed = data
    else:
        packed = pack_bitplanes_nchw(data, layer.act_lo, layer.act_bits, layer.groups,
                                     layer.pads, plan.pad_code, word_bits, layer.act_shift)
    rowsum = None
    if epi.needs_rowsum:
        rowsum = window_popcount(packed, kernel, layer.strides, layer.dilation, out_size)
    if plan.conv_layout == "lut":
        return lut_conv2d(packed, weight, epi, *params, out_channels=layer.out_channels,
                          strides=layer.strides, dilation=layer.dilation, out_size=out_size,
                          rowsum=rowsum, channels_last=channels_last_output,
                          pairs=plan.lut_pairs)
    return bitserial_conv2d_nchw(packed, weight, epi, *params,
                                 out_channels=layer.out_channels, strides=layer.strides,
                                 dilation=layer.dilation, out_size=out_size, rowsum=rowsum,
                                 channels_last=channels_last_output)


def chains_channels_last(plan: LayerPlan) -> bool:
    """Whether ``plan``'s layer can take packed bit-planes from a channels-last producer (a
    dense layer's rows are channels-last as they are).

    Grouped and im2col-packed convs pack their input themselves, and so do layers of codes
    wider than a byte (the pack compares byte vectors).
    """
    if plan.layer.input_dtype not in ("int8", "uint8"):
        return False
    return plan.layer.kind == "dense" or (
        plan.layer.kind == "conv2d" and plan.layer.groups == 1
        and plan.conv_layout in ("channels", "lut"))


def reads_channels_last(plan: LayerPlan) -> bool:
    """Whether ``plan``'s conv reads NHWC codes from a channels-last producer as they are:
    the int8-dot and integer kernels stage their input channels-innermost anyway, so NHWC
    codes make that stage a contiguous copy (NCHW ones, a gather across planes)."""
    return plan.layer.kind == "conv2d" and plan.conv_layout in ("dot8", "integer")


def packed_input_shape(plan: LayerPlan) -> tuple[int, ...]:
    """``[N, 1, M, Hp, Wp, Cw]``: the padded bit-planes a chained conv reads; ``[N, M, Cw]``
    for a dense layer."""
    if plan.layer.kind == "dense":
        rows, features = plan.layer.input_shape
        return (rows, plan.layer.act_bits, words_for(features, plan.word_bits))
    n, c, h, w = plan.layer.input_shape
    top, left, bottom, right = plan.layer.pads
    return (n, 1, plan.layer.act_bits, h + top + bottom, w + left + right,
            words_for(c, plan.word_bits))


def branch_epilogue_compute(plan: LayerPlan, p: te.Tensor, data: te.Tensor,
                            *params: te.Tensor) -> te.Tensor:
    """TE of the host half of an offloaded layer: branch sums ``p`` (from the accelerator) and
    the input codes ``data`` (for the ``Su`` term, when the epilogue needs it) → output.

    ``p`` is ``[N, OH, OW, OB, OBi]`` for a conv (NCHW output) or ``[B, OB, OBi]`` for a dense
    layer: output blocks of ``OBi`` channels, the last one possibly padding. Uses the CPU
    kernels' packing, window popcount and epilogue, so the two paths agree bit for bit by
    construction.
    """
    layer, epi = plan.layer, plan.epilogue
    rowsum = None
    if epi.needs_rowsum and layer.kind == "dense":
        rowsum = row_popcount(pack_bitplanes_rows(data, layer.act_lo, layer.act_bits,
                                                  shift=layer.act_shift))
    elif epi.needs_rowsum:
        packed = pack_bitplanes_nchw(data, layer.act_lo, layer.act_bits, 1, layer.pads,
                                     plan.pad_code, shift=layer.act_shift)
        rowsum = window_popcount(packed, tuple(int(s) for s in layer.weight.shape[2:]),
                                 layer.strides, layer.dilation, layer.output_shape[2:])
    inner = int(p.shape[-1])
    if len(p.shape) == 3:
        return epilogue_compute(epi, params, {"r": int(p.shape[0]), "oc": layer.out_channels},
                                lambda r, oc: p[r, oc // inner, oc % inner],
                                (lambda r, oc: rowsum[r]) if rowsum is not None else None)
    n, oh, ow = (int(s) for s in p.shape[:3])
    return epilogue_compute(
        epi, params, {"nn": n, "oc": layer.out_channels, "yy": oh, "xx": ow},
        lambda nn, oc, yy, xx: p[nn, yy, xx, oc // inner, oc % inner],
        (lambda nn, oc, yy, xx: rowsum[nn, 0, yy, xx]) if rowsum is not None else None)


__all__ = ["branch_epilogue_compute", "chains_channels_last", "layer_compute",
           "packed_input_shape", "reads_channels_last"]
