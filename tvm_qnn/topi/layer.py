# SPDX-License-Identifier: Apache-2.0
"""One quantized layer, as the rewrite pass found it, and its plan.

A :class:`QuantizedLayer` holds the numbers of a quantized conv2d or dense layer in ONNX terms
(codes, scales, zero-points, bias, activation clamp, output quantization). :func:`plan_layer`
turns it into the packed weight constant and the :class:`~.epilogue.Epilogue` constants;
:func:`~.layer_kernels.layer_compute` builds the plan's TE graph (``pack → [window
popcount] → branches + epilogue``) that becomes one PrimFunc.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bitpack import (
    words_for,
)
from .dot8_conv import dot8_eligible, dot8_groups, pack_dot8_weights
from .epilogue import Epilogue
from .layout import Layout
from .lut_conv import LUT_LANES, lut_fits, lut_pairs, pack_lut_weights
from .requantize import Requantize
from .thresholds import MAX_THRESHOLDS, requantize_thresholds
from .weights import choose_oc_block, decompose_weights, pack_conv_weights, pack_dense_weights

MAX_BITS = 8


@dataclass(frozen=True, eq=False)
class QuantizedLayer:
    """A quantized conv2d (NCHW/OIHW) or dense (``y = x W^T``) layer.

    Activations are per-tensor codes ``act_lo + act_step * u`` with ``0 <= u < 2^act_bits``
    (``act_step`` 2: QONNX's bipolar {-1, +1} codes are one plane); weights are
    integer codes ``[OC, Cg, KH, KW]`` or ``[OC, K]`` with per-channel scale/zero-point;
    ``output`` is what follows the accumulator (bias, activation clamp, output quantization).
    """

    kind: str  # "conv2d" or "dense"
    name: str
    input_shape: tuple[int, ...]
    weight: np.ndarray
    weight_scale: np.ndarray
    weight_zero_point: np.ndarray
    act_scale: float
    act_zero_point: int
    act_lo: int
    act_bits: int
    input_dtype: str
    output: Requantize
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    int_bias: np.ndarray | None = None  # added to the integer accumulator (QLinearConv's B)
    act_step: int = 1  # a power of two

    @property
    def act_shift(self) -> int:
        """``log2(act_step)``: the packers read ``u = (code - act_lo) >> act_shift``."""
        return int(self.act_step).bit_length() - 1

    def unsigned_codes(self, codes: np.ndarray) -> np.ndarray:
        """``u = (codes - act_lo) // act_step`` (int64), the values the bit-planes hold."""
        return (np.asarray(codes).astype(np.int64) - self.act_lo) >> self.act_shift

    @property
    def out_channels(self) -> int:
        """Number of output channels / features."""
        return int(self.weight.shape[0])

    @property
    def reduction_length(self) -> int:
        """N: real reduction taps per output (channels per group × kernel window)."""
        return int(np.prod(self.weight.shape[1:]))

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the layer output."""
        if self.kind == "dense":
            return (self.input_shape[0], self.out_channels)
        n, _, h, w = self.input_shape
        _, _, kh, kw = self.weight.shape
        top, left, bottom, right = self.pads
        oh = (h + top + bottom - self.dilation[0] * (kh - 1) - 1) // self.strides[0] + 1
        ow = (w + left + right - self.dilation[1] * (kw - 1) - 1) // self.strides[1] + 1
        return (n, self.out_channels, oh, ow)

    @property
    def signature(self) -> str:
        """The layer's shape, window and bit widths: what a kernel's speed depends on (a
        tuned kernel-family choice is kept for the layer with this signature only)."""
        text = f"{self.kind} {'x'.join(map(str, self.input_shape))}" \
               f"->{'x'.join(map(str, self.output_shape))} A{self.act_bits}"
        if self.kind == "conv2d":
            kh, kw = self.weight.shape[2:]
            text += f" k{kh}x{kw} s{self.strides} p{self.pads} d{self.dilation} g{self.groups}"
        return text


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """What the compiler derives from a layer: bit widths, packed weights, epilogue."""

    layer: QuantizedLayer
    weight_bits: int
    oc_block: int
    packed_weight: np.ndarray
    epilogue: Epilogue
    pad_code: int
    # conv2d: "channels" or "im2col" (bit-serial, see conv_packing), "integer" (int32),
    # "dot8" (u8 x s8 dot products) or "lut" (the bit-serial sums by table lookups)
    conv_layout: str = "channels"
    dot8_groups: int = 1  # "dot8": 4-channel groups per dot step (see dot8_conv.dot8_groups)
    word_bits: int = 64  # bits per packed word: 64 (x86) or 8 (NEON byte lanes)
    lut_pairs: bool = False  # "lut": two output channels' nibbles per byte (lut_conv.lut_pairs)

    @property
    def branches(self) -> int:
        """Number of binary branches (M·K)."""
        return self.layer.act_bits * self.weight_bits

    @property
    def kernel(self) -> str:
        """The kernel family: ``bit-serial``, ``int8-dot`` (u8 × s8 dot products), ``lut``
        (table lookups) or ``integer`` (int32 multiply-adds)."""
        return {"dot8": "int8-dot", "integer": "integer", "lut": "lut"}.get(
            self.conv_layout, "bit-serial")


def conv_packing(cg: int, kh: int, kw: int, branches: int) -> str:
    """How a conv's reduction is packed into words.

    ``channels``: words run along the channels of a group and the kernel taps loop over them
    (each input packed once). ``im2col``: words run along the whole window, packed per output
    position: fewer words per output when a group has few channels, but KH·KW times the packing.
    Measured here (x86, one core): im2col wins 4x on an 8-bit 1- or 3-channel first layer and
    loses 1.3-5x on 2-bit layers with 8-40 channels, so it is used only when it saves at least
    4x the words and the layer has at least 16 branches.
    """
    saving = kh * kw * words_for(cg) / words_for(cg * kh * kw)
    return "im2col" if saving >= 4 and branches >= 16 else "channels"


def _acc2_bound(d, const2, coef_su, n_taps: int, c_x: int, c_w: int) -> int:
    """A bound on ``|2 acc| = |-d P + coef_su Su + const2|`` (and every partial sum) for any
    input."""
    max_p, max_su = n_taps * c_x * c_w, n_taps * c_x
    return int(np.abs(np.asarray(d, np.int64)).max() * max_p
               + np.abs(np.asarray(coef_su, np.int64)).max() * max_su
               + np.abs(np.asarray(const2, np.int64)).max())


def plan_layer(layer: QuantizedLayer, layout: Layout = Layout(),
               max_thresholds: int = MAX_THRESHOLDS) -> LayerPlan:
    """Derive the bit-serial form of ``layer``: planes, packed weights, epilogue constants.

    ``layout`` is the target's (:class:`~.layout.Layout`): output channels per weight vector
    (for single-branch layers too), word width, and from how many branches (M·K) a conv gets a
    plain integer kernel instead (``conv_layout="integer"``: one int32 multiply-add per tap
    beats M·K popcounts there, e.g. on the 8-bit first layer of a network).
    A quantized output with at most ``max_thresholds`` code steps is computed by integer
    thresholds on the accumulator (:mod:`.thresholds`); 0 keeps the float epilogue.
    """
    if not 1 <= layer.act_bits <= MAX_BITS:
        raise ValueError(f"layer {layer.name}: act_bits={layer.act_bits}, "
                         f"supported 1..{MAX_BITS}")
    if layer.kind not in ("conv2d", "dense"):
        raise ValueError(f"layer {layer.name}: kind {layer.kind!r} (conv2d or dense)")
    planes = decompose_weights(layer.weight)
    if layer.kind == "conv2d":
        ocg = layer.out_channels // layer.groups
    else:
        ocg = layer.out_channels
    branches = layer.act_bits * planes.bits
    word_bits = layout.word_bits
    block = choose_oc_block(ocg, layout.oc_block_for(branches))
    packing, pairs = "channels", False
    offsets = layer.weight - np.asarray(layer.weight_zero_point, np.int64).reshape(
        (-1,) + (1,) * (layer.weight.ndim - 1))  # q_w - z_w
    if layer.kind == "conv2d":
        packing = conv_packing(*planes.codes.shape[1:], branches)
        dot_block = choose_oc_block(ocg, layout.dot8_oc_block)
        if packing == "channels" and layout.uses_lut_kernel(planes.bits, layer.act_bits) \
                and lut_fits(layer.act_bits, layer.groups, ocg, word_bits):
            n, _, oh, ow = layer.output_shape
            pairs = lut_pairs(ocg, n * oh * ow)
            packing, block = "lut", 2 * LUT_LANES if pairs else LUT_LANES
        elif layout.uses_dot8_kernel(branches) and layout.dot8_step_fits(dot_block) \
                and layer.act_step == 1 and dot8_eligible(layer.act_bits, offsets, layer.groups):
            packing, block = "dot8", dot_block
        elif layout.uses_integer_kernel(branches, int(planes.codes.shape[1])):
            packing = "integer"
    if packing == "integer" and layer.kind == "conv2d" and ocg == 1 \
            and planes.codes.shape[1] == 1:
        # Depthwise: a weight vector spans channels of different groups (one each).
        block = choose_oc_block(layer.out_channels, layout.dot8_oc_block)
    if packing == "dot8":
        packed = pack_dot8_weights(offsets, block)
    elif packing == "integer":
        wz = layer.weight - np.asarray(layer.weight_zero_point, np.int64).reshape(-1, 1, 1, 1)
        oc_, cg, kh, kw = wz.shape
        packed = np.ascontiguousarray(np.transpose(
            wz.reshape(oc_ // block, block, cg, kh, kw), (0, 2, 3, 4, 1))).astype(np.int32)
    elif packing == "im2col":
        flat = planes.codes.reshape(planes.codes.shape[0], -1)  # (c, ky, kx) order
        packed = pack_dense_weights(flat, planes.bits, block, word_bits)
    elif packing == "lut":
        packed = pack_lut_weights(
            pack_conv_weights(planes.codes, planes.bits, LUT_LANES, word_bits), pairs)
    elif layer.kind == "conv2d":
        packed = pack_conv_weights(planes.codes, planes.bits, block, word_bits)
    else:
        packed = pack_dense_weights(planes.codes, planes.bits, block, word_bits)

    c_x = (1 << layer.act_bits) - 1
    c_w = (1 << planes.bits) - 1
    # With codes act_lo + s u: q_x - z_x = s (u - z'_x), z'_x = (z_x - act_lo) / s, which may be
    # a half (bipolar: s = 2, z'_x = 1/2). The sums below are for 2 acc / s with z2 = 2 z'_x,
    # then scaled by s.
    step = int(layer.act_step)
    z2 = 2 * (layer.act_zero_point - layer.act_lo) // step
    zx = z2 // 2  # the padding code (a matched padded layer has an integer z'_x)
    d = planes.step
    e_w = planes.lo - np.asarray(layer.weight_zero_point, np.int64)
    n_taps = layer.reduction_length
    const2 = step * (d * (c_x - z2) * planes.sums - n_taps * z2 * e_w)
    if layer.int_bias is not None:
        const2 = const2 + 2 * np.asarray(layer.int_bias, np.int64)
    oc = layer.out_channels

    neg_d = np.broadcast_to(-d * step, (oc,)).astype(np.int64)
    coef_su = np.broadcast_to((d * c_w + 2 * e_w) * step, (oc,)).astype(np.int64)
    const2 = np.broadcast_to(const2, (oc,)).astype(np.int64)
    bound = _acc2_bound(d, const2, coef_su, n_taps, c_x, c_w)
    if packing == "integer":  # the kernel's "P" is acc - int_bias itself: 2acc = 2P + 2B
        int_bias = np.zeros(oc, np.int64) if layer.int_bias is None else layer.int_bias
        neg_d, coef_su = np.full(oc, 2, np.int64), np.zeros(oc, np.int64)
        const2 = 2 * np.broadcast_to(np.asarray(int_bias, np.int64), (oc,))
        max_x = step * (max(zx, c_x - zx) + (z2 % 2))  # |q_x - z_x| (z'_x may be a half)
        bound = int(2 * n_taps * max_x * np.abs(packed).max() + np.abs(const2).max())
    elif packing == "dot8":  # the kernel's "P" is Q = sum u w': 2acc = 2Q - 2 z'_x sum w' + 2B
        int_bias = np.zeros(oc, np.int64) if layer.int_bias is None else layer.int_bias
        neg_d, coef_su = np.full(oc, 2, np.int64), np.zeros(oc, np.int64)
        const2 = 2 * np.broadcast_to(np.asarray(int_bias, np.int64), (oc,)) \
            - 2 * zx * offsets.reshape(oc, -1).sum(axis=1)
        bound = int(2 * n_taps * c_x * np.abs(offsets).max(initial=0) + np.abs(const2).max())
    acc_dtype = "int32" if bound < 2**31 else "int64"
    mscale = np.broadcast_to(np.float32(layer.act_scale)
                             * np.asarray(layer.weight_scale, np.float32), (oc,)).copy()
    output = layer.output.per_channel(oc)
    steps = None
    # A compare per step per output beats the float epilogue only when the outputs cost more
    # than that to reduce: a depthwise 3x3 (9 taps) with 4-bit outputs (15 steps) measured
    # 1.30 ms with thresholds, 0.81 ms float (112x112x32, Zen 3).
    max_thresholds = min(max_thresholds, n_taps)
    if output.quantized and max_thresholds > 0:
        steps = requantize_thresholds(mscale, output, bound // 2, max_thresholds)
    if steps is not None:
        # Mirrored channels count upwards on -2acc: negate their accumulator constants.
        flip = np.where(steps.mirrored, -1, 1)
        neg_d, coef_su, const2 = neg_d * flip, coef_su * flip, const2 * flip
    epi = Epilogue(
        neg_d=neg_d,
        coef_su=coef_su,
        const2=const2,
        mscale=mscale,
        output=output,
        acc_dtype=acc_dtype,
        thresholds=None if steps is None else np.minimum(
            steps.values, np.iinfo(acc_dtype).max).astype(acc_dtype),
        base=None if steps is None else steps.base.astype(np.int32),
    )
    groups_per_step = 1
    if packing == "dot8":
        groups_per_step = dot8_groups(layer.act_bits, offsets, packed.shape[3])
    return LayerPlan(layer, planes.bits, block, packed, epi, pad_code=zx, conv_layout=packing,
                     word_bits=word_bits, dot8_groups=groups_per_step, lut_pairs=pairs)


def reference_output(layer: QuantizedLayer, xq: np.ndarray) -> np.ndarray:
    """The numpy integer reference of ``layer`` applied to codes ``xq``."""
    from .. import reference

    if layer.kind == "dense":
        acc = reference.dense_accumulate(xq, layer.weight, layer.act_zero_point,
                                         layer.weight_zero_point)
    else:
        acc = reference.conv2d_accumulate(xq, layer.weight, layer.act_zero_point,
                                          layer.weight_zero_point, layer.strides, layer.pads,
                                          layer.dilation, layer.groups)
    if layer.int_bias is not None:
        acc = acc + np.asarray(layer.int_bias, np.int64).reshape((1, -1) + (1,) * (acc.ndim - 2))
    out = layer.output
    if not out.quantized and "int" in out.out_dtype:
        return acc.astype(out.out_dtype)  # ConvInteger / MatMulInteger: the accumulator
    scale = np.float32(layer.act_scale) * np.asarray(layer.weight_scale, np.float32)
    return out.apply(acc, scale).astype(out.out_dtype)
