# SPDX-License-Identifier: Apache-2.0
"""Activation bit-planes: packing integer codes into words, and their weighted popcounts.

An activation code ``u = x - lo`` of ``M`` bits is split into planes ``u = sum_i 2^i u_i``;
plane ``i`` packs the bits ``u_i`` of consecutive reduction elements into ``word_bits``-bit
words (the operands ``A_i`` of the xor/popcount branches, :mod:`.branches`, which also has the
math). Bits past the reduction length are 0, so they add nothing to any sum. The row sums
``Su = sum_i 2^i popcount(A_i)`` (the sum of the codes) feed the epilogue's ``Su`` term.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import te, tirx

from .attrs import PACK_BLOCK, ROWSUM_BLOCK

WORD_BITS = 64  # x86 words; NEON kernels use bytes (word_bits=8)


def words_for(length: int, word_bits: int = WORD_BITS) -> int:
    """Number of ``word_bits``-bit words that hold ``length`` bits."""
    return (length + word_bits - 1) // word_bits


def _count_dtype(word_dtype: str) -> str:
    """Integer type wide enough to sum popcounts of ``word_dtype`` words."""
    return "uint64" if word_dtype == "uint64" else "uint32"


def weighted_popcount(x, shift):
    """``popcount(x) << shift`` in a type that does not overflow when summed.

    Parameters
    ----------
    x : PrimExpr
        A packed word (``uint64`` or ``uint8``).
    shift : PrimExpr
        The weight ``log2`` of the plane(s), e.g. ``i`` for ``2^i popcount(A_i)``.

    Returns
    -------
    PrimExpr
        ``popcount(x) * 2^shift``, ``uint64`` for ``uint64`` words, else ``uint32``.
    """
    count = tirx.popcount(x)
    dtype = _count_dtype(str(count.ty))
    return tirx.shift_left(count.astype(dtype), shift.astype(dtype))


def _plane_bit(value, i, bb, position, length: int, word_bits: int):
    """Bit ``i`` of ``value`` at bit ``bb`` of a ``uint{word_bits}`` word, 0 when the reduction
    element ``position`` is past ``length`` (the tail of the last word)."""
    dtype = f"uint{word_bits}"
    plane = tirx.bitwise_and(tirx.shift_right(value, i), 1).astype(dtype)
    if length % word_bits:  # no tail, no test: whole words need no masking
        plane = tirx.if_then_else(position < length, plane, tirx.const(0, dtype))
    return tirx.shift_left(plane, bb.astype(dtype))


def _unsigned(code, lo: int, shift: int):
    """``u = (code - lo) >> shift``: the unsigned code of an activation (``shift``: codes that
    step by ``2^shift``, e.g. 1 for QONNX's bipolar {-1, +1})."""
    value = code.astype("int32") - lo
    return tirx.shift_right(value, shift) if shift else value


def pack_bitplanes_nchw(data: te.Tensor, lo: int, bits: int, groups: int,
                        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
                        pad_code: int = 0, word_bits: int = WORD_BITS,
                        shift: int = 0) -> te.Tensor:
    """Pack integer NCHW codes into bit-planes along channels.

    ``A_i[n, g, y, x, w]`` bit ``b`` = bit ``i`` of ``u = (x - lo) >> shift`` at channel
    ``g * C/G + word_bits * w + b`` (each input packed once; a conv loops its taps over it).

    Parameters
    ----------
    data : te.Tensor
        ``[N, C, H, W]`` integer codes.
    lo : int
        The lowest code: ``u = x - lo`` is unsigned.
    bits : int
        Planes ``M`` to pack (``u < 2^bits``).
    groups : int
        Conv groups: each group's channels start a new word.
    pads : tuple of int
        ``(top, left, bottom, right)``; padded positions hold the bits of ``pad_code``.
    pad_code : int
        ``z'_x``, the code of a real zero.
    word_bits : int
        64 (x86) or 8 (NEON byte lanes).
    shift : int
        ``log2`` of the step between codes (0: consecutive codes).

    Returns
    -------
    te.Tensor
        ``[N, G, bits, H + top + bottom, W + left + right, words(C / G)]`` of
        ``uint{word_bits}``, block :data:`~.attrs.PACK_BLOCK`; bits past the group's channel
        count are 0.
    """
    n, c, h, w = (int(s) for s in data.shape)
    cg = c // groups
    cw = words_for(cg, word_bits)
    top, left, bottom, right = pads
    hp, wp = h + top + bottom, w + left + right
    b = te.reduce_axis((0, word_bits), name="b")

    def code(nn, ch, yy, xx):
        inside = tirx.all(yy >= top, yy < top + h, xx >= left, xx < left + w)
        value = _unsigned(data[nn, ch, yy - top, xx - left], lo, shift)
        if top or left or bottom or right:
            value = tirx.if_then_else(inside, value, tirx.const(pad_code, "int32"))
        return value

    def bit(nn, g, i, yy, xx, word, bb):
        ch_in_group = word * word_bits + bb
        # Clamped so the masked-off tail never indexes past C.
        value = code(nn, g * cg + tirx.min(ch_in_group, cg - 1), yy, xx)
        return _plane_bit(value, i, bb, ch_in_group, cg, word_bits)

    return te.compute(
        (n, groups, bits, hp, wp, cw),
        lambda nn, g, i, yy, xx, word: te.sum(bit(nn, g, i, yy, xx, word, b), axis=b),
        name=PACK_BLOCK,
    )


def pack_bitplanes_im2col(data: te.Tensor, lo: int, bits: int, groups: int,
                          kernel: tuple[int, int], strides: tuple[int, int],
                          dilation: tuple[int, int], pads: tuple[int, int, int, int],
                          pad_code: int, out_size: tuple[int, int],
                          word_bits: int = WORD_BITS, shift: int = 0) -> te.Tensor:
    """Pack each conv window (channels × taps) of NCHW codes into bit-planes.

    Reduction element ``r = (c * KH + ky) * KW + kx`` of output ``(y, x)`` is bit
    ``r % word_bits`` of word ``r // word_bits``. Used instead of :func:`pack_bitplanes_nchw`
    when the channels of a group fill words poorly (first layers, depthwise): fewer words per
    output, at the cost of packing each input KH·KW times.

    Parameters
    ----------
    data, lo, bits, groups, pads, pad_code, word_bits, shift
        As for :func:`pack_bitplanes_nchw`.
    kernel, strides, dilation : tuple of int
        The conv's ``(KH, KW)``, strides and dilation.
    out_size : tuple of int
        ``(OH, OW)``.

    Returns
    -------
    te.Tensor
        ``[N, G, bits, OH, OW, words(C/G * KH * KW)]`` ``uint{word_bits}``, block
        :data:`~.attrs.PACK_BLOCK`.
    """
    n, c, h, w = (int(s) for s in data.shape)
    cg = c // groups
    kh, kw = kernel
    length = cg * kh * kw
    top, left, _, _ = pads
    b = te.reduce_axis((0, word_bits), name="b")

    def bit(nn, g, i, yy, xx, word, bb):
        r = tirx.min(word * word_bits + bb, length - 1)
        ch, ky, kx = r // (kh * kw), (r // kw) % kh, r % kw
        iy = yy * strides[0] + ky * dilation[0] - top
        ix = xx * strides[1] + kx * dilation[1] - left
        inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
        value = _unsigned(data[nn, g * cg + ch, tirx.max(tirx.min(iy, h - 1), 0),
                               tirx.max(tirx.min(ix, w - 1), 0)], lo, shift)
        value = tirx.if_then_else(inside, value, tirx.const(pad_code, "int32"))
        return _plane_bit(value, i, bb, word * word_bits + bb, length, word_bits)

    return te.compute(
        (n, groups, bits) + tuple(out_size) + (words_for(length, word_bits),),
        lambda nn, g, i, yy, xx, word: te.sum(bit(nn, g, i, yy, xx, word, b), axis=b),
        name=PACK_BLOCK,
    )


def pack_bitplanes_rows(data: te.Tensor, lo: int, bits: int,
                        word_bits: int = WORD_BITS, shift: int = 0) -> te.Tensor:
    """Pack integer ``[B, K]`` codes into ``[B, bits, words(K)]`` ``uint{word_bits}`` planes.

    ``A_i[r, w]`` bit ``b`` = bit ``i`` of ``u = (x[r, word_bits * w + b] - lo) >> shift`` (a
    dense layer's rows; the arguments as for :func:`pack_bitplanes_nchw`). Bits
    past ``K`` are 0. Block :data:`~.attrs.PACK_BLOCK`.
    """
    rows, k = (int(s) for s in data.shape)
    kw = words_for(k, word_bits)
    b = te.reduce_axis((0, word_bits), name="b")

    def bit(r, i, word, bb):
        col = word * word_bits + bb
        value = _unsigned(data[r, tirx.min(col, k - 1)], lo, shift)
        return _plane_bit(value, i, bb, col, k, word_bits)

    return te.compute((rows, bits, kw), lambda r, i, word: te.sum(bit(r, i, word, b), axis=b),
                      name=PACK_BLOCK)


def _plane_popcount(shape: tuple[int, ...], axis_names: list[str], m_bits: int,
                    taps: dict[str, int], n_words: int, word_at: Callable) -> te.Tensor:
    """``Su[idx] = sum_{i, taps, word} 2^i popcount(A_i)``: the row sums of the three packings.

    ``axis_names`` name the output axes; ``taps`` are the extra reduce axes (name → extent)
    besides the plane ``i`` and the word ``rw``; ``word_at(idx, i, taps, rw)`` returns the word
    of plane ``i`` to count.
    """
    i = te.reduce_axis((0, m_bits), name="i")
    tap_axes = [te.reduce_axis((0, extent), name=name) for name, extent in taps.items()]
    rw = te.reduce_axis((0, n_words), name="rw")

    def total(*idx):
        return te.sum(weighted_popcount(word_at(idx, i, tap_axes, rw), i),
                      axis=[i, *tap_axes, rw])

    return te.compute(shape, total, name=ROWSUM_BLOCK, varargs_names=axis_names)


def window_popcount(packed: te.Tensor, kernel: tuple[int, int], strides: tuple[int, int],
                    dilation: tuple[int, int], out_size: tuple[int, int]) -> te.Tensor:
    """Row sums over each conv window: the sum of the codes the window reads.

    ``Su[n, g, y, x] = sum_{i, ky, kx, w} 2^i popcount(A_i[n, g, y·s + ky·d, x·s + kx·d, w])``

    Parameters
    ----------
    packed : te.Tensor
        :func:`pack_bitplanes_nchw` output ``[N, G, M, Hp, Wp, Cw]``.
    kernel, strides, dilation : tuple of int
        The conv's ``(KH, KW)``, strides ``s`` and dilation ``d``.
    out_size : tuple of int
        ``(OH, OW)``.

    Returns
    -------
    te.Tensor
        ``[N, G, OH, OW]`` (uint64 for uint64 words, else uint32), block
        :data:`~.attrs.ROWSUM_BLOCK`.
    """
    n, groups, m_bits = (int(s) for s in packed.shape[:3])
    cw = int(packed.shape[5])

    def word_at(idx, i, taps, rw):
        nn, g, yy, xx = idx
        ry, rx = taps
        return packed[nn, g, i, yy * strides[0] + ry * dilation[0],
                      xx * strides[1] + rx * dilation[1], rw]

    return _plane_popcount((n, groups) + tuple(out_size), ["nn", "g", "yy", "xx"], m_bits,
                           {"ry": kernel[0], "rx": kernel[1]}, cw, word_at)


def patch_popcount(packed: te.Tensor) -> te.Tensor:
    """``Su[n, g, y, x] = sum_i 2^i popcount(A_i)`` of im2col windows ``[N, G, M, OH, OW, Kw]``
    (:func:`pack_bitplanes_im2col`: one window per output, already gathered)."""
    n, groups, m_bits, oh, ow, kwords = (int(s) for s in packed.shape)

    def word_at(idx, i, _taps, rw):
        nn, g, yy, xx = idx
        return packed[nn, g, i, yy, xx, rw]

    return _plane_popcount((n, groups, oh, ow), ["nn", "g", "yy", "xx"], m_bits, {}, kwords,
                           word_at)


def row_popcount(packed: te.Tensor) -> te.Tensor:
    """``Su[r] = sum_i 2^i popcount(A_i)`` of packed ``[B, M, Kw]`` rows
    (:func:`pack_bitplanes_rows`)."""
    rows, m_bits, kw = (int(s) for s in packed.shape)

    def word_at(idx, i, _taps, rw):
        (r,) = idx
        return packed[r, i, rw]

    return _plane_popcount((rows,), ["r"], m_bits, {}, kw, word_at)
