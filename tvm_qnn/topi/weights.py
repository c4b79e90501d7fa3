# SPDX-License-Identifier: Apache-2.0
"""Compile-time analysis and bit-packing of constant weight codes (numpy).

Weights are constants, so the number of bit-planes comes from the values actually used, not
from the declared type: channel ``oc`` is written ``q_w = lo[oc] + d[oc] * u`` with the
smallest ``lo``, the largest step ``d`` (the gcd of the offsets) and ``K`` planes for ``u``.
Codes in {-1, +1} are one bipolar plane; ternary {-1, 0, 1} are two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bitpack import WORD_BITS, words_for


@dataclass(frozen=True)
class WeightPlanes:
    """Unsigned weight codes ``u`` per output channel and their affine parameters."""

    codes: np.ndarray  # u, shape [OC, ...reduction axes], int64, 0 <= u < 2^bits
    lo: np.ndarray  # [OC] int64
    step: np.ndarray  # [OC] int64 (d)
    bits: int  # K

    @property
    def sums(self) -> np.ndarray:
        """``Uw[oc]``: the sum of the unsigned codes of each output channel."""
        return self.codes.reshape(self.codes.shape[0], -1).sum(axis=1)


def decompose_weights(q: np.ndarray) -> WeightPlanes:
    """Split integer weight codes ``q[OC, ...]`` into ``lo + step * u`` with few planes."""
    q = np.asarray(q).astype(np.int64)
    flat = q.reshape(q.shape[0], -1)
    lo = flat.min(axis=1)
    offsets = flat - lo[:, None]
    step = np.gcd.reduce(offsets, axis=1)
    step[step == 0] = 1
    u = offsets // step[:, None]
    bits = max(1, int(u.max()).bit_length())
    return WeightPlanes(codes=u.reshape(q.shape), lo=lo, step=step, bits=bits)


def pack_rows(u: np.ndarray, bits: int, word_bits: int = WORD_BITS) -> np.ndarray:
    """Pack the last axis of unsigned codes into ``bits`` planes of ``uint{word_bits}`` words.

    ``u[..., L]`` → ``[..., bits, words(L)]``; bit ``b`` of word ``w`` of plane ``j`` is bit
    ``j`` of ``u[..., word_bits * w + b]``; bits past ``L`` are 0.
    """
    length = u.shape[-1]
    padded = words_for(length, word_bits) * word_bits
    planes = (u[..., None, :] >> np.arange(bits)[:, None]) & 1
    planes = np.pad(planes, [(0, 0)] * (planes.ndim - 1) + [(0, padded - length)])
    packed = np.packbits(planes.astype(np.uint8), axis=-1, bitorder="little")
    dtype = np.dtype(f"uint{word_bits}").newbyteorder("<")
    return np.ascontiguousarray(packed).view(dtype).astype(f"uint{word_bits}")


def choose_oc_block(out_channels_per_group: int, preferred: int) -> int:
    """Largest power of two ≤ ``preferred`` dividing the channels of one group."""
    block = preferred
    while out_channels_per_group % block:
        block //= 2
    return block


def pack_conv_weights(u: np.ndarray, bits: int, oc_block: int,
                      word_bits: int = WORD_BITS) -> np.ndarray:
    """``u[OC, Cg, KH, KW]`` → ``[OC / OCi, K, KH, KW, Cw, OCi]`` words (the conv layout)."""
    oc, _, kh, kw = u.shape
    rows = pack_rows(np.transpose(u, (0, 2, 3, 1)), bits, word_bits)  # [OC, KH, KW, K, Cw]
    cw = rows.shape[-1]
    rows = rows.reshape(oc // oc_block, oc_block, kh, kw, bits, cw)
    return np.ascontiguousarray(np.transpose(rows, (0, 4, 2, 3, 5, 1)))


def pack_dense_weights(u: np.ndarray, bits: int, oc_block: int,
                       word_bits: int = WORD_BITS) -> np.ndarray:
    """``u[OC, K]`` → ``[OC / OCi, K_bits, Kw, OCi]`` words (the dense layout)."""
    oc = u.shape[0]
    rows = pack_rows(u, bits, word_bits)  # [OC, K_bits, Kw]
    rows = rows.reshape(oc // oc_block, oc_block, bits, rows.shape[-1])
    return np.ascontiguousarray(np.transpose(rows, (0, 2, 3, 1)))
