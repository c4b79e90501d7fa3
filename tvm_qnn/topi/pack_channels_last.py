# SPDX-License-Identifier: Apache-2.0
"""Bit-packing of channels-last codes between two bit-serial layers.

When a bit-serial conv feeds another one directly, the producer writes its output codes
channels-last (``[N, H, W, C]``: each position's channels contiguous) and this PrimFunc packs
them into the consumer's padded bit-planes ``[N, 1, M, H + pt + pb, W + pl + pr, Cw]``
(the layout of :func:`.bitpack.pack_bitplanes_nchw`). A word of plane ``i`` is one vector
compare: ``word_bits`` contiguous codes, shifted right by ``i``, truncated to their low bit
and reinterpreted as one ``uint{word_bits}`` (``vptestmb`` + ``kmovq`` on AVX-512), instead
of ``word_bits`` scalar shift-and-or steps (measured: 0.006 ms against 0.039 ms for the
56×56×64 1-bit activations of the suite's first conv).

It is written as TIR directly: a TE compute cannot index a tensor with a vector (``Ramp``).
"""

from __future__ import annotations

from tvm import tirx

from .attrs import PACK_CL_ATTR
from .bitpack import words_for


def pack_channels_last_func(shape: tuple[int, int, int, int], dtype: str, lo: int, bits: int,
                            pads: tuple[int, int, int, int], pad_code: int,
                            word_bits: int = 64, parallel: bool = True,
                            shift: int = 0) -> tirx.PrimFunc:
    """The PrimFunc ``codes [N, H, W, C] (dtype) → planes [N, 1, bits, Hp, Wp, Cw]``.

    Bit ``b`` of word ``w`` of plane ``i`` at padded position ``(y, x)`` is bit ``i + shift``
    of ``code - lo`` (bit ``i`` of ``u``) at channel ``w * word_bits + b``; positions in the
    padding hold the bits of ``pad_code`` (a ``u`` value); bits past ``C`` are 0.
    ``parallel``: rows over the cores.
    """
    from tvm.script import tirx as T

    n, h, w, c = shape
    top, left, bottom, right = pads
    hp, wp = h + top + bottom, w + left + right
    cw = words_for(c, word_bits)
    full_words = c // word_bits  # words of word_bits real channels (the rest: a partial word)
    tail = c % word_bits
    word = f"uint{word_bits}"
    lanes = word_bits
    u8 = "uint8" if dtype.startswith("uint") else "int8"
    rows = n * hp
    tail_mask = (1 << tail) - 1
    # A last word of 8, 16 or 32 channels is one vector compare too (e.g. a 32-channel layer:
    # measured 0.095 ms for the scalar loop on CNV_1W1A's 28x28 conv, a third of the model).
    vector_tail = tail in (8, 16, 32)

    @T.prim_func(private=True, s_tir=True)
    def pack(src: T.Buffer((n, h, w, c), dtype), dst: T.Buffer((n, 1, bits, hp, wp, cw), word)):
        T.func_attr({"tirx.noalias": True, PACK_CL_ATTR: True})
        with T.sblock("root"):
            for row in T.parallel(rows) if parallel else T.serial(rows):
                for xx in range(wp):
                    for i in T.unroll(bits):
                        for k in T.unroll(cw):
                            nn = row // hp
                            yy = row % hp
                            if yy >= top and yy < top + h and xx >= left and xx < left + w:
                                if k < full_words:
                                    dst[nn, 0, i, yy, xx, k] = T.reinterpret(word, T.Cast(
                                        f"uint1x{lanes}",
                                        (src[nn, yy - top, xx - left,
                                             T.Ramp(k * lanes, 1, lanes)]
                                         - T.Broadcast(T.Cast(u8, lo), lanes))
                                        >> T.Broadcast(T.Cast(u8, i + shift), lanes)))
                                elif vector_tail:
                                    dst[nn, 0, i, yy, xx, k] = T.Cast(word, T.reinterpret(
                                        f"uint{tail}", T.Cast(
                                            f"uint1x{tail}",
                                            (src[nn, yy - top, xx - left,
                                                 T.Ramp(k * lanes, 1, tail)]
                                             - T.Broadcast(T.Cast(u8, lo), tail))
                                            >> T.Broadcast(T.Cast(u8, i + shift), tail))))
                                else:
                                    dst[nn, 0, i, yy, xx, k] = T.Cast(word, 0)
                                    for b in T.serial(tail):
                                        dst[nn, 0, i, yy, xx, k] = dst[
                                            nn, 0, i, yy, xx, k] | (T.Cast(
                                                word, ((T.Cast("int32", src[
                                                    nn, yy - top, xx - left, k * lanes + b])
                                                    - lo) >> (i + shift)) & 1)
                                                    << T.Cast(word, b))
                            else:
                                dst[nn, 0, i, yy, xx, k] = T.if_then_else(
                                    ((pad_code >> i) & 1) == 1,
                                    T.if_then_else(k < full_words, T.bitwise_not(T.Cast(word, 0)),
                                                   T.Cast(word, tail_mask)),
                                    T.Cast(word, 0))

    return pack
