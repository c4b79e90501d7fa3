# SPDX-License-Identifier: Apache-2.0
"""A table-lookup conv2d: the branch sums ``P`` of the bit-serial kernel by byte shuffles.

The bit-serial kernel on CPUs without a vector popcount (AVX2) spends most of its time
counting bits: per 32 bytes of ``A xor B``, two ``vpshufb`` nibble lookups and four
instructions to split the nibbles and add. Here the activations are turned into tables first,
as T-MAC does (Wei et al., arXiv 2407.00088), so that the weights index them directly.

For each input position, word ``w`` and half ``h`` (low or high nibble: four channels) of
the byte-word bit-planes ``A_i``, a 16-entry table over every possible weight nibble ``v``::

    T[pos, w, h, v] = sum_{i<M} 2^i popcount(nib_h(A_i[pos, w]) xor v)

and then, with the weight planes ``B_j`` split into nibbles when the weights are packed::

    P = sum_{i,j} 2^(i+j) popcount(A_i xor B_j)
      = sum_{j<K} 2^j sum_{taps, w, h} T[., w, h, nib_h(B_j)]

which is exactly the bit-serial ``P``: the epilogue, the padding and the ``Su`` term are the
bit-serial kernel's. One lookup step is one ``vpshufb``: the table (16 bytes, both lanes) indexed
by the nibbles of :data:`LUT_LANES` output channels, added in uint8 lanes. The activation
planes are folded into the table, so a layer costs ``K`` steps per nibble whatever ``M``: no
xor, no nibble split, no plane loop. The uint8 sums are widened every chunk of at most
``255 // (4 (2^M - 1))`` lookups (:func:`lut_chunk`).

Measured (one Zen 4 core, ``x86:haswell`` code, branch sums and tables only, CNV's 3x3 convs):
64→64 channels 14² 0.0129 ms, 128→128 7² 0.0124 ms, against 0.0208 and 0.0207 ms for the
whole bit-serial layer: 1.4-1.6x the ``vpshufb`` popcount roofline of the same core.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .attrs import BRANCH_BLOCK, CHUNK_BLOCK, LUT_ATTR, LUT_TABLE_BLOCK
from .branches import byte_sums_dtype
from .epilogue import Epilogue, conv_epilogue

#: Output channels per lookup step: the 32 byte lanes of a ymm register.
LUT_LANES = 32
#: Entries of a table: every value of a weight nibble.
NIBBLE_VALUES = 16
#: The widest activation codes whose word (two lookups of at most ``4 (2^M - 1)``) fits the
#: uint8 sums: ``8 (2^M - 1) <= 255``.
LUT_MAX_ACT_BITS = 5


def lut_fits(act_bits: int, groups: int, out_channels_per_group: int, word_bits: int) -> bool:
    """Whether a conv fits the table-lookup kernel: byte words, one group, whole lookup steps
    of output channels, tables of bytes."""
    return (word_bits == 8 and groups == 1 and out_channels_per_group % LUT_LANES == 0
            and act_bits <= LUT_MAX_ACT_BITS)


def pack_lut_weights(packed: np.ndarray) -> np.ndarray:
    """Byte-word weight planes ``[OC / OCi, K, KH, KW, Cw, OCi]`` → their nibbles ``[OC / OCi,
    K, KH, KW, Cw, 2, OCi]`` (low, then high), the indices of the lookup steps."""
    return np.ascontiguousarray(np.stack([packed & 15, packed >> 4], axis=-2)).astype(np.uint8)


def lut_chunk(act_bits: int, kw: int, words: int) -> tuple[bool, int]:
    """How many lookups a chunk sums in uint8 lanes: ``(whole_rows, words)``.

    A lookup adds at most ``4 (2^M - 1)``, so ``255 // that`` of them fit. ``whole_rows``: a
    chunk is a row of the window (``KW`` taps × ``Cw`` words × 2 halves), the widening
    once per row; else ``words``, a divisor of ``Cw``, per chunk and tap.
    """
    most = 255 // (4 * ((1 << act_bits) - 1))
    if kw * words * 2 <= most:
        return True, words
    return False, max(f for f in range(1, words + 1) if words % f == 0 and 2 * f <= most)


def lookup_tables(packed: te.Tensor) -> te.Tensor:
    """``[N, 1, M, Hp, Wp, Cw]`` byte-word bit-planes → the tables ``[N, Hp, Wp, Cw, 2,
    16]`` (see the module docstring)."""
    n, _, m_bits, hp, wp, cw = (int(s) for s in packed.shape)

    def table(nn, yy, xx, w, h, v):
        total = tirx.const(0, "uint8")
        for i in range(m_bits):
            a = packed[nn, 0, i, yy, xx, w]
            # A select, not a shift by 4h: both halves' tables then form one vector.
            nib = tirx.if_then_else(h == 0, tirx.bitwise_and(a, tirx.const(15, "uint8")),
                                    tirx.shift_right(a, tirx.const(4, "uint8")))
            count = tirx.popcount(tirx.bitwise_xor(nib, v.astype("uint8")))
            total = total + tirx.shift_left(count, tirx.const(i, "uint8"))
        return total

    return te.compute((n, hp, wp, cw, 2, NIBBLE_VALUES), table, name=LUT_TABLE_BLOCK)


def lut_conv2d(packed: te.Tensor, weight: te.Tensor, epi: Epilogue, *params,
               out_channels: int, strides: tuple[int, int], dilation: tuple[int, int],
               out_size: tuple[int, int], rowsum: te.Tensor | None = None,
               channels_last: bool = False) -> te.Tensor:
    """Table-lookup conv2d (one group) with the fused epilogue.

    Parameters
    ----------
    packed : te.Tensor
        :func:`~.bitpack.pack_bitplanes_nchw` output ``[N, 1, M, Hp, Wp, Cw]``, byte words.
    weight : te.Tensor
        :func:`pack_lut_weights` output ``[OC / 32, K, KH, KW, Cw, 2, 32]``.
    epi, *params, out_channels, strides, dilation, out_size, rowsum, channels_last
        As for :func:`~.branches.bitserial_conv2d_nchw`.

    Returns
    -------
    te.Tensor
        ``[N, OC, OH, OW]`` (or ``[N, OH, OW, OC]``) of ``epi.out_dtype``.
    """
    n, _, m_bits, _, _, cw = (int(s) for s in packed.shape)
    _, k_bits, kh, kw, _, _, lanes = (int(s) for s in weight.shape)
    tables = lookup_tables(packed)
    sh, sw = strides
    dh, dw = dilation
    rows, chunk = lut_chunk(m_bits, kw, cw)
    shape = (n, out_channels // lanes) + tuple(out_size) + (lanes,)

    # The chunks keep the output channels innermost: the lookup step writes them as a vector.
    def lookup(idx, j, ky, kx, w, h, v):
        nn, ob, yy, xx, oi = idx
        hit = weight[ob, j, ky, kx, w, h, oi] == v.astype("uint8")
        entry = tables[nn, yy * sh + ky * dh, xx * sw + kx * dw, w, h, v]
        return tirx.if_then_else(hit, entry, tirx.const(0, "uint8"))

    # The reduction over v with a select is how one lookup reads: ``entry[nibble]``. The target
    # replaces the (channels x 16 values) loops by one byte shuffle (the tensorized step).
    if rows:
        def partial(*args):
            idx, (j, ky) = args[:4] + args[-1:], args[4:-1]
            rx = te.reduce_axis((0, kw), name="rx")
            rw = te.reduce_axis((0, cw), name="rw")
            rh = te.reduce_axis((0, 2), name="rh")
            rv = te.reduce_axis((0, NIBBLE_VALUES), name="rv")
            return te.sum(lookup(idx, j, ky, rx, rw, rh, rv), axis=[rx, rw, rh, rv])

        chunks = te.compute(shape[:4] + (k_bits, kh, lanes), partial, name=CHUNK_BLOCK,
                            attrs={LUT_ATTR: 1})
        outer = (k_bits, kh)
    else:
        def partial(*args):
            idx, (j, ky, kx, wo) = args[:4] + args[-1:], args[4:-1]
            rwi = te.reduce_axis((0, chunk), name="rwi")
            rh = te.reduce_axis((0, 2), name="rh")
            rv = te.reduce_axis((0, NIBBLE_VALUES), name="rv")
            return te.sum(lookup(idx, j, ky, kx, wo * chunk + rwi, rh, rv), axis=[rwi, rh, rv])

        chunks = te.compute(shape[:4] + (k_bits, kh, kw, cw // chunk, lanes), partial,
                            name=CHUNK_BLOCK, attrs={LUT_ATTR: 1})
        outer = (k_bits, kh, kw, cw // chunk)
    acc = byte_sums_dtype(m_bits, k_bits, cw * kh * kw)
    axes = [te.reduce_axis((0, e), name=f"o{k}") for k, e in enumerate(outer)]

    def total(*idx):
        part = chunks[(*idx[:4], *axes, idx[4])].astype(acc)
        return te.sum(tirx.shift_left(part, axes[0].astype(acc)), axis=axes)

    p = te.compute(shape, total, name=BRANCH_BLOCK)
    return conv_epilogue(p, rowsum, epi, params, out_channels, 1, channels_last)


__all__ = ["LUT_LANES", "LUT_MAX_ACT_BITS", "NIBBLE_VALUES", "lookup_tables", "lut_chunk",
           "lut_conv2d", "lut_fits", "pack_lut_weights"]
