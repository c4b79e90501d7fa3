# SPDX-License-Identifier: Apache-2.0
"""Multi-branch bit-serial computes: bit-packing, xor/popcount conv2d and dense, epilogue.

The math (Sun et al., arXiv 2106.09886; ``DESIGN.md`` §1). Every quantized operand is an
unsigned code ``u = q - lo`` of ``B`` bits, ``u = sum_i 2^i u_i``. Its bipolar form
``X = 2u - (2^B - 1) = sum_i 2^i b_i`` with ``b_i = 2 u_i - 1`` in {-1, +1}. For activations
(``M`` planes ``A_i``) and weights (``K`` planes ``B_j``) packed one bit per reduction element::

    P  = sum_{i<M} sum_{j<K} 2^(i+j) popcount(A_i xor B_j)        # the M*K binary branches
    Su = sum_{i<M} 2^i popcount(A_i)                              # = sum of u_x
    sum u_x u_w = (c_w Su + c_x Uw - P) / 2      with c = 2^B - 1, Uw = sum u_w

The affine codes are ``q_x - z_x = u_x - z'_x`` (``z'_x = z_x - lo_x``) and
``q_w - z_w = d u_w + e_w`` (weight step ``d``, ``e_w = lo_w - z_w``), so the integer
accumulator of the quantized layer is exactly::

    2 acc = -d P + (d c_w + 2 e_w) Su + d (c_x - 2 z'_x) Uw - 2 N z'_x e_w

Padded positions hold the bits of ``z'_x`` (real zero), so ``N`` (the number of real
reduction taps) is the same for every output. Bits beyond the reduction length are 0 in both
operands: they add nothing to P, Su or Uw. The ``Su`` term vanishes when the weight levels are
symmetric around the weight zero-point (``d c_w + 2 e_w = 0``, the paper's bipolar weights).

The epilogue follows ONNX semantics in float32: ``v = float(acc) * (s_x s_w) + bias``, an
optional clamp (ReLU / Clip), then ``q = saturate(round_half_even(v / s_y) + z_y)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from .attrs import (
    BRANCH_BLOCK,
    CHUNK_BLOCK,
    EPILOGUE_BLOCK,
    INT_INPUT_BLOCK,
    LAYOUT_ATTR,
    PACK_BLOCK,
    ROWSUM_BLOCK,
)

WORD_BITS = 64  # x86 words; NEON kernels use bytes (word_bits=8)
# Byte words (NEON): a byte popcount is at most 8, so 31 of them still fit a uint8 lane.
BYTE_CHUNK = 31


def words_for(length: int, word_bits: int = WORD_BITS) -> int:
    """Number of ``word_bits``-bit words that hold ``length`` bits."""
    return (length + word_bits - 1) // word_bits


def _count_dtype(word_dtype: str) -> str:
    """Integer type wide enough to sum popcounts of ``word_dtype`` words."""
    return "uint64" if word_dtype == "uint64" else "uint32"


def _weighted_popcount(x, shift):
    """``popcount(x) << shift`` in a type that does not overflow when summed."""
    count = tirx.popcount(x)
    dtype = _count_dtype(str(count.ty))
    return tirx.shift_left(count.astype(dtype), shift.astype(dtype))


@dataclass(frozen=True)
class Epilogue:
    """Per-output-channel constants of the fused epilogue (numpy arrays of length OC).

    ``neg_d`` multiplies P, ``coef_su`` multiplies Su, ``const2`` is the rest of ``2 acc``;
    ``mscale`` / ``bias`` turn the integer accumulator into the float value; ``clamp_lo`` /
    ``clamp_hi`` are the float activation bounds (±inf for none); ``out_scale``,
    ``out_zero_point``, ``qmin``, ``qmax`` quantize the result when ``out_dtype`` is an integer
    type (for a float output they are unused).
    """

    neg_d: np.ndarray
    coef_su: np.ndarray
    const2: np.ndarray
    mscale: np.ndarray
    bias: np.ndarray
    clamp_lo: float
    clamp_hi: float
    out_dtype: str
    out_scale: np.ndarray | None = None
    out_zero_point: np.ndarray | None = None
    qmin: int = 0
    qmax: int = 0
    # Integer type of ``2 acc``: int32 when its bound fits (half the vector work of int64).
    acc_dtype: str = "int64"
    # Integer requantization (:mod:`.thresholds`): ``q = base + #{k: 2acc >= thresholds[:, k]}``
    # ([OC, K] in ``acc_dtype``, [OC] int32), replacing mscale..out_zero_point when set.
    thresholds: np.ndarray | None = None
    base: np.ndarray | None = None

    @property
    def needs_rowsum(self) -> bool:
        """True when the ``Su`` term is not zero for some channel."""
        return bool(np.any(self.coef_su != 0))

    @property
    def quantized(self) -> bool:
        """True when the epilogue ends in a QuantizeLinear (integer codes out)."""
        return self.out_scale is not None

    def tensor_params(self) -> list[tuple[str, np.ndarray]]:
        """The per-channel arrays that differ between channels (passed as tensors).

        Uniform arrays are folded into the code as immediates instead.
        """
        names = ["neg_d", "coef_su", "const2"]
        if self.thresholds is not None:
            names += ["thresholds", "base"]
        else:
            names += ["mscale", "bias"] + (["out_scale", "out_zero_point"]
                                           if self.quantized else [])
        out = []
        for name in names:
            arr = getattr(self, name)
            if name == "thresholds":  # per channel: uniform when every row is the same
                if not np.all(arr == arr[:1]):
                    out.append((name, arr))
            elif not np.all(arr == arr.flat[0]):
                if name in _ACC_PARAMS:
                    arr = arr.astype(self.acc_dtype)
                out.append((name, arr))
        return out


_ACC_PARAMS = ("neg_d", "coef_su", "const2")


def _param_getter(epi: Epilogue, tensors: dict[str, te.Tensor]):
    """Return ``get(name, oc)``: a tensor load for varying params, an immediate otherwise."""
    acc = epi.acc_dtype
    dtypes = {"neg_d": acc, "coef_su": acc, "const2": acc, "mscale": "float32",
              "bias": "float32", "out_scale": "float32", "out_zero_point": "int32",
              "thresholds": acc, "base": "int32"}

    def get(name, oc, k=None):
        """``name[oc]`` (``thresholds[oc, k]``)."""
        if name in tensors:
            return tensors[name][oc] if k is None else tensors[name][oc, k]
        arr = getattr(epi, name)
        value = arr.flat[0] if k is None else arr[0, k]
        return tirx.const(value.item(), dtypes[name])

    return get


def _fenced(x):
    """``llvm.arithmetic.fence(x)``: the value of ``x``, never contracted with its users.

    TVM and LLVM fuse a float ``a * b + c`` into an FMA, which skips the rounding of the
    product and breaks bit-exactness with ONNX's float32 ``(acc * scale) + bias``.
    """
    return tirx.call_llvm_pure_intrin("float32", "llvm.arithmetic.fence", x)


def _round_half_even(x):
    """ONNX QuantizeLinear's rounding, as ``llvm.roundeven``.

    Same result as ``nearbyint`` in the default rounding mode, but it vectorizes next to the
    fence above, where ``nearbyint`` made LLVM scalarize the whole epilogue (measured: the
    conv56 epilogue took 0.25 ms of a 0.43 ms layer).
    """
    return tirx.call_llvm_pure_intrin(x.ty if hasattr(x, "ty") else "float32",
                                      "llvm.roundeven", x)


def _epilogue_value(epi: Epilogue, get, oc, p, su):
    """Integer branches → output value of one element (the fused requantize epilogue)."""
    dtype = epi.acc_dtype
    acc2 = get("neg_d", oc) * p.astype(dtype) + get("const2", oc)
    if su is not None:
        acc2 = acc2 + get("coef_su", oc) * su.astype(dtype)
    if epi.thresholds is not None:
        q = get("base", oc)
        for k in range(epi.thresholds.shape[1]):
            q = q + tirx.Select(acc2 >= get("thresholds", oc, k), tirx.const(1, "int32"),
                                tirx.const(0, "int32"))
        return q.astype(epi.out_dtype)
    acc = tirx.shift_right(acc2, tirx.const(1, dtype))
    if not epi.quantized and "int" in epi.out_dtype:
        return acc.astype(epi.out_dtype)  # the raw accumulator (ConvInteger)
    v = _fenced(acc.astype("float32") * get("mscale", oc)) + get("bias", oc)
    if np.isfinite(epi.clamp_lo):
        v = te.max(v, tirx.const(epi.clamp_lo, "float32"))
    if np.isfinite(epi.clamp_hi):
        v = te.min(v, tirx.const(epi.clamp_hi, "float32"))
    if not epi.quantized:
        return v.astype(epi.out_dtype)
    q = _round_half_even(v / get("out_scale", oc)).astype("int32") + get("out_zero_point", oc)
    q = te.max(te.min(q, tirx.const(epi.qmax, "int32")), tirx.const(epi.qmin, "int32"))
    return q.astype(epi.out_dtype)


def pack_bitplanes_nchw(data: te.Tensor, lo: int, bits: int, groups: int,
                        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
                        pad_code: int = 0, word_bits: int = WORD_BITS) -> te.Tensor:
    """Pack integer NCHW codes into bit-planes along channels.

    Returns ``[N, G, bits, H + top + bottom, W + left + right, words(C / G)]`` of
    ``uint{word_bits}`` where bit ``b`` of word ``w`` of plane ``i`` is bit ``i`` of
    ``u = x - lo`` at channel ``g * C/G + word_bits * w + b``. Padded positions hold the bits
    of ``pad_code``; bits past the group's channel count are 0.
    """
    n, c, h, w = (int(s) for s in data.shape)
    cg = c // groups
    cw = words_for(cg, word_bits)
    dtype = f"uint{word_bits}"
    top, left, bottom, right = pads
    hp, wp = h + top + bottom, w + left + right
    b = te.reduce_axis((0, word_bits), name="b")

    def code(nn, ch, yy, xx):
        inside = tirx.all(yy >= top, yy < top + h, xx >= left, xx < left + w)
        value = data[nn, ch, yy - top, xx - left].astype("int32") - lo
        if top or left or bottom or right:
            value = tirx.if_then_else(inside, value, tirx.const(pad_code, "int32"))
        return value

    def bit(nn, g, i, yy, xx, word, bb):
        ch_in_group = word * word_bits + bb
        # Clamped so the masked-off tail never indexes past C.
        value = code(nn, g * cg + tirx.min(ch_in_group, cg - 1), yy, xx)
        plane = tirx.bitwise_and(tirx.shift_right(value, i), 1).astype(dtype)
        if cg % word_bits:
            plane = tirx.if_then_else(ch_in_group < cg, plane, tirx.const(0, dtype))
        return tirx.shift_left(plane, bb.astype(dtype))

    return te.compute(
        (n, groups, bits, hp, wp, cw),
        lambda nn, g, i, yy, xx, word: te.sum(bit(nn, g, i, yy, xx, word, b), axis=b),
        name=PACK_BLOCK,
    )


def pack_bitplanes_im2col(data: te.Tensor, lo: int, bits: int, groups: int,
                          kernel: tuple[int, int], strides: tuple[int, int],
                          dilation: tuple[int, int], pads: tuple[int, int, int, int],
                          pad_code: int, out_size: tuple[int, int],
                          word_bits: int = WORD_BITS) -> te.Tensor:
    """Pack each conv window (channels × taps) of NCHW codes into bit-planes.

    Returns ``[N, G, bits, OH, OW, words(C/G * KH * KW)]`` ``uint{word_bits}``; reduction
    element ``r = (c * KH + ky) * KW + kx`` is bit ``r % word_bits`` of word
    ``r // word_bits``. Used instead of
    :func:`pack_bitplanes_nchw` when the channels of a group fill words poorly (first layers,
    depthwise): fewer words per output, at the cost of packing each input KH·KW times.
    """
    n, c, h, w = (int(s) for s in data.shape)
    cg = c // groups
    kh, kw = kernel
    length = cg * kh * kw
    top, left, _, _ = pads
    dtype = f"uint{word_bits}"
    b = te.reduce_axis((0, word_bits), name="b")

    def bit(nn, g, i, yy, xx, word, bb):
        r = tirx.min(word * word_bits + bb, length - 1)
        ch, ky, kx = r // (kh * kw), (r // kw) % kh, r % kw
        iy = yy * strides[0] + ky * dilation[0] - top
        ix = xx * strides[1] + kx * dilation[1] - left
        inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
        value = data[nn, g * cg + ch, tirx.max(tirx.min(iy, h - 1), 0),
                     tirx.max(tirx.min(ix, w - 1), 0)].astype("int32") - lo
        value = tirx.if_then_else(inside, value, tirx.const(pad_code, "int32"))
        plane = tirx.bitwise_and(tirx.shift_right(value, i), 1).astype(dtype)
        if length % word_bits:
            plane = tirx.if_then_else(word * word_bits + bb < length, plane,
                                      tirx.const(0, dtype))
        return tirx.shift_left(plane, bb.astype(dtype))

    return te.compute(
        (n, groups, bits) + tuple(out_size) + (words_for(length, word_bits),),
        lambda nn, g, i, yy, xx, word: te.sum(bit(nn, g, i, yy, xx, word, b), axis=b),
        name=PACK_BLOCK,
    )


def pack_bitplanes_rows(data: te.Tensor, lo: int, bits: int,
                        word_bits: int = WORD_BITS) -> te.Tensor:
    """Pack integer ``[B, K]`` codes into ``[B, bits, words(K)]`` ``uint{word_bits}`` planes."""
    rows, k = (int(s) for s in data.shape)
    kw = words_for(k, word_bits)
    dtype = f"uint{word_bits}"
    b = te.reduce_axis((0, word_bits), name="b")

    def bit(r, i, word, bb):
        col = word * word_bits + bb
        value = data[r, tirx.min(col, k - 1)].astype("int32") - lo
        plane = tirx.bitwise_and(tirx.shift_right(value, i), 1).astype(dtype)
        if k % word_bits:
            plane = tirx.if_then_else(col < k, plane, tirx.const(0, dtype))
        return tirx.shift_left(plane, bb.astype(dtype))

    return te.compute((rows, bits, kw), lambda r, i, word: te.sum(bit(r, i, word, b), axis=b),
                      name=PACK_BLOCK)


def _branch_popcounts(shape: tuple[int, ...], m_bits: int, k_bits: int,
                      taps: tuple[int, ...], n_words: int, operands, dtype: str) -> te.Tensor:
    """``P[idx] = sum_{i, j, taps, word} 2^(i+j) popcount(a xor w)``: the M·K branches.

    ``operands(idx, i, j, taps, word)`` returns the activation and weight words. uint64 words
    (x86) are summed directly. Byte words (NEON) are summed in two steps: chunks of at most
    :data:`BYTE_CHUNK` words in uint8 lanes (``cnt`` + byte ``add``, no widening), then the
    chunks shifted by ``i + j`` into a uint16 accumulator when the largest possible ``P``
    fits 16 bits, else uint32.
    """
    names = ["i", "j"] + [f"r{k}" for k in range(len(taps))]
    if dtype == "uint64":
        axes = [te.reduce_axis((0, e), name=nm) for nm, e in zip(names, (m_bits, k_bits) + taps,
                                                                strict=True)]
        rw = te.reduce_axis((0, n_words), name="rw")

        def direct(*idx):
            a, w = operands(idx, axes[0], axes[1], axes[2:], rw)
            return te.sum(_weighted_popcount(tirx.bitwise_xor(a, w), axes[0] + axes[1]),
                          axis=[*axes, rw])

        return te.compute(shape, direct, name=BRANCH_BLOCK)

    chunk = max(f for f in range(1, min(n_words, BYTE_CHUNK) + 1) if n_words % f == 0)
    rank = len(shape)

    def partial(*args):
        idx, (i, j), tap_vals, wo = args[:rank], args[rank:rank + 2], args[rank + 2:-1], args[-1]
        rwi = te.reduce_axis((0, chunk), name="rwi")
        a, w = operands(idx, i, j, tap_vals, wo * chunk + rwi)
        return te.sum(tirx.popcount(tirx.bitwise_xor(a, w)), axis=rwi)

    chunks = te.compute(shape + (m_bits, k_bits) + taps + (n_words // chunk,), partial,
                        name=CHUNK_BLOCK)
    worst = ((1 << m_bits) - 1) * ((1 << k_bits) - 1) * n_words * 8 * int(np.prod(taps))
    acc = "uint16" if worst <= 0xFFFF else "uint32"
    axes = [te.reduce_axis((0, e), name=nm) for nm, e in zip(names, (m_bits, k_bits) + taps,
                                                            strict=True)]
    rwo = te.reduce_axis((0, n_words // chunk), name="rwo")

    def total(*idx):
        part = chunks[(*idx, *axes, rwo)].astype(acc)
        return te.sum(tirx.shift_left(part, (axes[0] + axes[1]).astype(acc)), axis=[*axes, rwo])

    return te.compute(shape, total, name=BRANCH_BLOCK)


def _conv_epilogue(p: te.Tensor, rowsum, epi: Epilogue, params, out_channels: int,
                   groups: int, channels_last: bool = False) -> te.Tensor:
    """Output from blocked branches ``p[N, OC/OCi, OH, OW, OCi]`` (+ ``rowsum``): NCHW, or
    NHWC with ``channels_last`` (what :mod:`.pack_channels_last` packs for the next layer)."""
    n, _, oh, ow, oc_inner = (int(s) for s in p.shape)
    ocg = out_channels // groups
    names = [name for name, _ in epi.tensor_params()]
    get = _param_getter(epi, dict(zip(names, params, strict=True)))

    def out(nn, oc, yy, xx):
        su = rowsum[nn, oc // ocg, yy, xx] if rowsum is not None else None
        return _epilogue_value(epi, get, oc, p[nn, oc // oc_inner, yy, xx, oc % oc_inner], su)

    if channels_last:
        return te.compute((n, oh, ow, out_channels), lambda nn, yy, xx, oc: out(nn, oc, yy, xx),
                          name=EPILOGUE_BLOCK, attrs={LAYOUT_ATTR: "NHWC"})
    return te.compute((n, out_channels, oh, ow), out, name=EPILOGUE_BLOCK)


def bitserial_conv2d_nchw(packed: te.Tensor, weight: te.Tensor, epi: Epilogue, *params,
                          out_channels: int, strides: tuple[int, int],
                          dilation: tuple[int, int], out_size: tuple[int, int],
                          rowsum: te.Tensor | None = None,
                          channels_last: bool = False) -> te.Tensor:
    """Bit-serial conv2d with the fused requantize epilogue, NCHW (or NHWC) output.

    ``packed`` is :func:`pack_bitplanes_nchw` output ``[N, G, M, Hp, Wp, Cw]``; ``weight`` is
    ``[OC / OCi, K, KH, KW, Cw, OCi]`` uint64 (output channels innermost so ``OCi`` of them
    share one activation word); ``rowsum`` is :func:`window_popcount` output (needed when
    ``epi.needs_rowsum``); ``params`` are the tensors of ``epi.tensor_params()`` in order.
    """
    n, groups, m_bits = (int(s) for s in packed.shape[:3])
    cw = int(packed.shape[5])
    _, k_bits, kh, kw, _, oc_inner = (int(s) for s in weight.shape)
    sh, sw = strides
    dh, dw = dilation
    ocg = out_channels // groups

    def operands(idx, i, j, taps, rw):
        nn, ob, yy, xx, oi = idx
        ry, rx = taps
        g = (ob * oc_inner + oi) // ocg
        return (packed[nn, g, i, yy * sh + ry * dh, xx * sw + rx * dw, rw],
                weight[ob, j, ry, rx, rw, oi])

    p = _branch_popcounts((n, out_channels // oc_inner) + tuple(out_size) + (oc_inner,),
                          m_bits, k_bits, (kh, kw), cw, operands, str(packed.dtype))
    return _conv_epilogue(p, rowsum, epi, params, out_channels, groups, channels_last)


def bitserial_conv2d_im2col(packed: te.Tensor, weight: te.Tensor, epi: Epilogue, *params,
                            out_channels: int, rowsum: te.Tensor | None = None,
                            channels_last: bool = False) -> te.Tensor:
    """Bit-serial conv2d over :func:`pack_bitplanes_im2col` windows, NCHW (or NHWC) output.

    ``weight`` is ``[OC / OCi, K, Kw, OCi]`` (the dense layout of the flattened window).
    """
    n, groups, m_bits, oh, ow, kwords = (int(s) for s in packed.shape)
    _, k_bits, _, oc_inner = (int(s) for s in weight.shape)
    ocg = out_channels // groups

    def operands(idx, i, j, _taps, rw):
        nn, ob, yy, xx, oi = idx
        g = (ob * oc_inner + oi) // ocg
        return packed[nn, g, i, yy, xx, rw], weight[ob, j, rw, oi]

    p = _branch_popcounts((n, out_channels // oc_inner, oh, ow, oc_inner), m_bits, k_bits, (),
                          kwords, operands, str(packed.dtype))
    return _conv_epilogue(p, rowsum, epi, params, out_channels, groups, channels_last)


def window_popcount(packed: te.Tensor, kernel: tuple[int, int], strides: tuple[int, int],
                    dilation: tuple[int, int], out_size: tuple[int, int]) -> te.Tensor:
    """``Su[n, g, y, x] = sum_i 2^i popcount(A_i)`` over each conv window (= sum of codes)."""
    n, groups, m_bits = (int(s) for s in packed.shape[:3])
    cw = int(packed.shape[5])
    i = te.reduce_axis((0, m_bits), name="i")
    ry = te.reduce_axis((0, kernel[0]), name="ry")
    rx = te.reduce_axis((0, kernel[1]), name="rx")
    rw = te.reduce_axis((0, cw), name="rw")

    def total(nn, g, yy, xx):
        a = packed[nn, g, i, yy * strides[0] + ry * dilation[0], xx * strides[1] + rx * dilation[1],
                   rw]
        return te.sum(_weighted_popcount(a, i), axis=[i, ry, rx, rw])

    return te.compute((n, groups) + tuple(out_size), total, name=ROWSUM_BLOCK)


def patch_popcount(packed: te.Tensor) -> te.Tensor:
    """``Su[n, g, y, x] = sum_i 2^i popcount(A_i)`` of im2col windows ``[N, G, M, OH, OW, Kw]``."""
    n, groups, m_bits, oh, ow, kwords = (int(s) for s in packed.shape)
    i = te.reduce_axis((0, m_bits), name="i")
    rw = te.reduce_axis((0, kwords), name="rw")
    return te.compute(
        (n, groups, oh, ow),
        lambda nn, g, yy, xx: te.sum(_weighted_popcount(packed[nn, g, i, yy, xx, rw], i),
                                     axis=[i, rw]),
        name=ROWSUM_BLOCK,
    )


def row_popcount(packed: te.Tensor) -> te.Tensor:
    """``Su[r] = sum_i 2^i popcount(A_i)`` of packed ``[B, M, Kw]`` rows."""
    rows, m_bits, kw = (int(s) for s in packed.shape)
    i = te.reduce_axis((0, m_bits), name="i")
    rw = te.reduce_axis((0, kw), name="rw")
    return te.compute(
        (rows,),
        lambda r: te.sum(_weighted_popcount(packed[r, i, rw], i), axis=[i, rw]),
        name=ROWSUM_BLOCK,
    )


def bitserial_dense(packed: te.Tensor, weight: te.Tensor, epi: Epilogue, *params,
                    out_features: int, rowsum: te.Tensor | None = None) -> te.Tensor:
    """Bit-serial dense ``y = x W^T`` with the fused epilogue, output ``[B, out_features]``.

    ``packed`` is ``[B, M, Kw]``; ``weight`` is ``[OC / OCi, K, Kw, OCi]`` uint64.
    """
    rows, m_bits, kw = (int(s) for s in packed.shape)
    _, k_bits, _, oc_inner = (int(s) for s in weight.shape)

    def operands(idx, i, j, _taps, rw):
        r, ob, oi = idx
        return packed[r, i, rw], weight[ob, j, rw, oi]

    p = _branch_popcounts((rows, out_features // oc_inner, oc_inner), m_bits, k_bits, (), kw,
                          operands, str(packed.dtype))
    names = [name for name, _ in epi.tensor_params()]
    get = _param_getter(epi, dict(zip(names, params, strict=True)))

    def out(r, oc):
        su = rowsum[r] if rowsum is not None else None
        return _epilogue_value(epi, get, oc, p[r, oc // oc_inner, oc % oc_inner], su)

    return te.compute((rows, out_features), out, name=EPILOGUE_BLOCK)


def epilogue_from_branches(p: te.Tensor, rowsum, epi: Epilogue, *params,
                           out_channels: int) -> te.Tensor:
    """Layer output from branch sums ``P`` computed elsewhere (the accelerator).

    ``p`` is ``[N, OH, OW, OB, OBi]`` for a conv (NCHW output) or ``[B, OB, OBi]`` for a dense
    layer, output blocks of ``OBi`` channels (the last block may be padding); ``rowsum`` as
    for the CPU kernels (``[N, 1, OH, OW]`` / ``[B]``) or None.
    """
    names = [name for name, _ in epi.tensor_params()]
    get = _param_getter(epi, dict(zip(names, params, strict=True)))
    inner = int(p.shape[-1])
    if len(p.shape) == 3:
        def dense_out(r, oc):
            su = rowsum[r] if rowsum is not None else None
            return _epilogue_value(epi, get, oc, p[r, oc // inner, oc % inner], su)

        return te.compute((int(p.shape[0]), out_channels), dense_out, name=EPILOGUE_BLOCK)
    n, oh, ow = (int(s) for s in p.shape[:3])

    def conv_out(nn, oc, yy, xx):
        su = rowsum[nn, 0, yy, xx] if rowsum is not None else None
        return _epilogue_value(epi, get, oc, p[nn, yy, xx, oc // inner, oc % inner], su)

    return te.compute((n, out_channels, oh, ow), conv_out, name=EPILOGUE_BLOCK)


def integer_conv2d(data: te.Tensor, weight: te.Tensor, epi: Epilogue, *params, zero_point: int,
                   groups: int, pads: tuple[int, int, int, int], strides: tuple[int, int],
                   dilation: tuple[int, int], out_size: tuple[int, int],
                   channels_last: bool = False) -> te.Tensor:
    """Plain integer conv2d with the same fused epilogue (layers with many branches).

    ``acc = sum (x - z_x) (w - z_w)`` in int32, the weights ``[OC / OCi, Cg, KH, KW, OCi]``
    int32 (zero-point already subtracted); padding holds ``z_x`` (0 after the shift). The
    accumulator takes the place of the branch sums ``P`` (block ``branch_popcount``, same
    blocked layout), so the CPU schedule of the bit-serial conv serves it unchanged, and the
    epilogue constants make ``2 acc = 2 P + 2 B``.
    """
    n, c, h, w = (int(s) for s in data.shape)
    _, cg, kh, kw, oc_inner = (int(s) for s in weight.shape)
    top, left, bottom, right = pads
    out_channels = int(epi.neg_d.shape[0])
    ocg = out_channels // groups

    def shifted(nn, ch, yy, xx):
        inside = tirx.all(yy >= top, yy < top + h, xx >= left, xx < left + w)
        value = data[nn, ch, tirx.max(tirx.min(yy - top, h - 1), 0),
                     tirx.max(tirx.min(xx - left, w - 1), 0)].astype("int32") - zero_point
        return tirx.if_then_else(inside, value, tirx.const(0, "int32"))

    xs = te.compute((n, c, h + top + bottom, w + left + right), shifted, name=INT_INPUT_BLOCK)
    rc = te.reduce_axis((0, cg), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def acc(nn, ob, yy, xx, oi):
        g = (ob * oc_inner + oi) // ocg
        return te.sum(xs[nn, g * cg + rc, yy * strides[0] + ry * dilation[0],
                         xx * strides[1] + rx * dilation[1]] * weight[ob, rc, ry, rx, oi],
                      axis=[rc, ry, rx])

    p = te.compute((n, out_channels // oc_inner) + tuple(out_size) + (oc_inner,), acc,
                   name=BRANCH_BLOCK)
    return _conv_epilogue(p, None, epi, params, out_channels, groups, channels_last)
