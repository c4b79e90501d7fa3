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

**Paired nibbles.** A conv of at most :data:`LUT_PAIRED_MAX_POSITIONS` output positions (a
dense layer of a few rows, run as a 1×1 conv; a conv on a 1×1 or 2×2 map) reads each weight
that many times at most, so its weight bytes are what it streams. There a byte holds the
nibbles of two output channels, ``b`` (low) and ``32 + b`` (high) of a 64-channel vector, and
one step splits them (a mask, a shift) and looks both up in the same table: half the weight
bytes, and each table load serves 64 channels (:func:`lut_pairs`).
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
#: Output positions (``N·OH·OW``) up to which a lookup conv pairs its weight nibbles.
#: Measured (``x86:haswell`` code, one core of a Sapphire Rapids-class Intel Xeon, 4096 → 4096
#: dense, ms, popcounts / paired / a byte per nibble): 1 row W1A1 0.056 / 0.048 / 0.145, W1A2
#: 0.113 / 0.053 / 0.146, W2A2 0.253 / 0.145 / 0.289; 2 rows W1A1 0.109 / 0.090 / 0.146; 4 rows
#: W1A1 0.231 / 0.139 / 0.176, W2A2 0.940 / 0.314 / 0.360; 8 rows W1A1 0.435 / 0.329 / 0.298,
#: W2A2 1.82 / 0.649 / 0.644. ``x86:skylake-avx512`` code alike.
LUT_PAIRED_MAX_POSITIONS = 4


def lut_fits(act_bits: int, groups: int, out_channels_per_group: int, word_bits: int) -> bool:
    """Whether a conv fits the table-lookup kernel: byte words, one group, whole lookup steps
    of output channels, tables of bytes."""
    return (word_bits == 8 and groups == 1 and out_channels_per_group % LUT_LANES == 0
            and act_bits <= LUT_MAX_ACT_BITS)


def lut_pairs(out_channels: int, positions: int) -> bool:
    """Whether a lookup conv with ``out_channels`` and ``positions`` output positions (all
    images) packs two output channels' weight nibbles in a byte (module docstring)."""
    return out_channels % (2 * LUT_LANES) == 0 and positions <= LUT_PAIRED_MAX_POSITIONS


def pack_lut_weights(packed: np.ndarray, pairs: bool = False) -> np.ndarray:
    """Byte-word weight planes ``[OC / OCi, K, KH, KW, Cw, OCi]`` (``OCi`` = 32) → their nibbles
    ``[OC / OCi, K, KH, KW, Cw, 2, OCi]`` (low, then high), the indices of the lookup steps.

    ``pairs``: ``[OC / 2OCi, ...]``, each byte the nibble of output ``64 q + b`` in its low half
    and of ``64 q + 32 + b`` in its high half."""
    nibbles = np.stack([packed & 15, packed >> 4], axis=-2).astype(np.uint8)
    if pairs:
        nibbles = nibbles[0::2] | (nibbles[1::2] << 4)
    return np.ascontiguousarray(nibbles)


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
               channels_last: bool = False, pairs: bool = False) -> te.Tensor:
    """Table-lookup conv2d (one group) with the fused epilogue.

    Parameters
    ----------
    packed : te.Tensor
        :func:`~.bitpack.pack_bitplanes_nchw` output ``[N, 1, M, Hp, Wp, Cw]``, byte words.
    weight : te.Tensor
        :func:`pack_lut_weights` output ``[OC / 32, K, KH, KW, Cw, 2, 32]`` (``[OC / 64, ...]``
        with ``pairs``).
    epi, *params, out_channels, strides, dilation, out_size, rowsum, channels_last
        As for :func:`~.branches.bitserial_conv2d_nchw`.
    pairs : bool
        The weights hold two output channels' nibbles per byte (:func:`lut_pairs`): the
        chunks are ``[..., 2, 32]`` (high half, channel), a vector 64 channels wide.

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
    vector = 2 * lanes if pairs else lanes
    shape = (n, out_channels // vector) + tuple(out_size) + (vector,)
    # The chunks' channel dims: (high half, channel) with pairs, else (channel,).
    lane_shape = (2, lanes) if pairs else (lanes,)

    def lane_index(oc):
        return (oc // lanes, oc % lanes) if pairs else (oc,)

    # The chunks keep the output channels innermost: the lookup step writes them as a vector.
    def lookup(idx, j, ky, kx, w, h, v):
        nn, ob, yy, xx = idx[:4]
        nibble = weight[ob, j, ky, kx, w, h, idx[-1]]
        if pairs:  # the same expression as the paired lookup step (target/x86/lut.py)
            nibble = tirx.bitwise_and(tirx.shift_right(nibble, (idx[4] * 4).astype("uint8")),
                                      tirx.const(15, "uint8"))
        hit = nibble == v.astype("uint8")
        entry = tables[nn, yy * sh + ky * dh, xx * sw + kx * dw, w, h, v]
        return tirx.if_then_else(hit, entry, tirx.const(0, "uint8"))

    def split(args):
        """A chunk's indices → (output index, its own outer reduction vars)."""
        k = len(lane_shape)
        return args[:4] + args[-k:], args[4:-k]

    # The reduction over v with a select is how one lookup reads: ``entry[nibble]``. The target
    # replaces the (channels x 16 values) loops by one byte shuffle (the tensorized step).
    if rows:
        def partial(*args):
            idx, (j, ky) = split(args)
            rx = te.reduce_axis((0, kw), name="rx")
            rw = te.reduce_axis((0, cw), name="rw")
            rh = te.reduce_axis((0, 2), name="rh")
            rv = te.reduce_axis((0, NIBBLE_VALUES), name="rv")
            return te.sum(lookup(idx, j, ky, rx, rw, rh, rv), axis=[rx, rw, rh, rv])

        chunks = te.compute(shape[:4] + (k_bits, kh) + lane_shape, partial, name=CHUNK_BLOCK,
                            attrs={LUT_ATTR: len(lane_shape)})
        outer = (k_bits, kh)
    else:
        def partial(*args):
            idx, (j, ky, kx, wo) = split(args)
            rwi = te.reduce_axis((0, chunk), name="rwi")
            rh = te.reduce_axis((0, 2), name="rh")
            rv = te.reduce_axis((0, NIBBLE_VALUES), name="rv")
            return te.sum(lookup(idx, j, ky, kx, wo * chunk + rwi, rh, rv), axis=[rwi, rh, rv])

        chunks = te.compute(shape[:4] + (k_bits, kh, kw, cw // chunk) + lane_shape, partial,
                            name=CHUNK_BLOCK, attrs={LUT_ATTR: len(lane_shape)})
        outer = (k_bits, kh, kw, cw // chunk)
    acc = byte_sums_dtype(m_bits, k_bits, cw * kh * kw)
    axes = [te.reduce_axis((0, e), name=f"o{k}") for k, e in enumerate(outer)]

    def total(*idx):
        part = chunks[(*idx[:4], *axes, *lane_index(idx[4]))].astype(acc)
        return te.sum(tirx.shift_left(part, axes[0].astype(acc)), axis=axes)

    p = te.compute(shape, total, name=BRANCH_BLOCK)
    return conv_epilogue(p, rowsum, epi, params, out_channels, 1, channels_last)


__all__ = ["LUT_LANES", "LUT_MAX_ACT_BITS", "LUT_PAIRED_MAX_POSITIONS", "NIBBLE_VALUES",
           "lookup_tables", "lut_chunk", "lut_conv2d", "lut_fits", "lut_pairs",
           "pack_lut_weights"]
