# SPDX-License-Identifier: Apache-2.0
"""Multi-branch bit-serial kernels: xor/popcount conv2d and dense, with the fused epilogue.

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

The activation planes and ``Su`` come from :mod:`.bitpack`; ``P`` is computed here; the
epilogue (:mod:`.epilogue`) turns ``2 acc`` into the layer's output.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .attrs import BRANCH_BLOCK, CHUNK_BLOCK
from .bitpack import weighted_popcount
from .epilogue import Epilogue, conv_epilogue, epilogue_compute

# Byte words (NEON): a byte popcount is at most 8, so 31 of them still fit a uint8 lane.
BYTE_CHUNK = 31


def byte_sums_dtype(m_bits: int, k_bits: int, words: int) -> str:
    """The accumulator of ``P`` summed from byte-word chunks: uint16 when the largest ``P``
    over ``words`` byte words per output fits it, else uint32."""
    worst = ((1 << m_bits) - 1) * ((1 << k_bits) - 1) * words * 8
    return "uint16" if worst <= 0xFFFF else "uint32"


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
            return te.sum(weighted_popcount(tirx.bitwise_xor(a, w), axes[0] + axes[1]),
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
    acc = byte_sums_dtype(m_bits, k_bits, n_words * int(np.prod(taps)))
    axes = [te.reduce_axis((0, e), name=nm) for nm, e in zip(names, (m_bits, k_bits) + taps,
                                                            strict=True)]
    rwo = te.reduce_axis((0, n_words // chunk), name="rwo")

    def total(*idx):
        part = chunks[(*idx, *axes, rwo)].astype(acc)
        return te.sum(tirx.shift_left(part, (axes[0] + axes[1]).astype(acc)), axis=[*axes, rwo])

    return te.compute(shape, total, name=BRANCH_BLOCK)


def bitserial_conv2d_nchw(packed: te.Tensor, weight: te.Tensor, epi: Epilogue, *params,
                          out_channels: int, strides: tuple[int, int],
                          dilation: tuple[int, int], out_size: tuple[int, int],
                          rowsum: te.Tensor | None = None,
                          channels_last: bool = False) -> te.Tensor:
    """Bit-serial conv2d with the fused requantize epilogue, NCHW (or NHWC) output.

    ``P[n, oc, y, x] = sum_{i, j, ky, kx, w} 2^(i+j) popcount(A_i[n, g, y·s + ky·d, x·s + kx·d,
    w] xor B_j[oc, ky, kx, w])`` with ``g`` the group of ``oc``, then the epilogue.

    Parameters
    ----------
    packed : te.Tensor
        :func:`~.bitpack.pack_bitplanes_nchw` output ``[N, G, M, Hp, Wp, Cw]``.
    weight : te.Tensor
        ``[OC / OCi, K, KH, KW, Cw, OCi]`` weight planes, words of the same type as
        ``packed`` (output channels innermost so ``OCi`` of them share one activation word).
    epi : Epilogue
        The layer's epilogue constants.
    *params : te.Tensor
        The tensors of ``epi.tensor_params()``, in order.
    out_channels : int
        ``OC``.
    strides, dilation, out_size : tuple of int
        The conv's strides ``s``, dilation ``d`` and ``(OH, OW)``.
    rowsum : te.Tensor, optional
        :func:`~.bitpack.window_popcount` output, needed when ``epi.needs_rowsum``.
    channels_last : bool
        Write NHWC instead of NCHW (:func:`~.epilogue.conv_epilogue`).

    Returns
    -------
    te.Tensor
        ``[N, OC, OH, OW]`` (or ``[N, OH, OW, OC]``) of ``epi.out_dtype``.
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
    return conv_epilogue(p, rowsum, epi, params, out_channels, groups, channels_last)


def bitserial_conv2d_im2col(packed: te.Tensor, weight: te.Tensor, epi: Epilogue, *params,
                            out_channels: int, rowsum: te.Tensor | None = None,
                            channels_last: bool = False) -> te.Tensor:
    """Bit-serial conv2d over im2col windows, NCHW (or NHWC) output.

    ``P[n, oc, y, x] = sum_{i, j, w} 2^(i+j) popcount(A_i[n, g, y, x, w] xor B_j[oc, w])``,
    then the epilogue.

    Parameters
    ----------
    packed : te.Tensor
        :func:`~.bitpack.pack_bitplanes_im2col` output ``[N, G, M, OH, OW, Kw]``.
    weight : te.Tensor
        ``[OC / OCi, K, Kw, OCi]``: the dense layout of the flattened window.
    epi, *params, out_channels, channels_last
        As for :func:`bitserial_conv2d_nchw`.
    rowsum : te.Tensor, optional
        :func:`~.bitpack.patch_popcount` output, needed when ``epi.needs_rowsum``.

    Returns
    -------
    te.Tensor
        ``[N, OC, OH, OW]`` (or ``[N, OH, OW, OC]``) of ``epi.out_dtype``.
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
    return conv_epilogue(p, rowsum, epi, params, out_channels, groups, channels_last)


def bitserial_dense(packed: te.Tensor, weight: te.Tensor, epi: Epilogue, *params,
                    out_features: int, rowsum: te.Tensor | None = None) -> te.Tensor:
    """Bit-serial dense ``y = x W^T`` with the fused epilogue.

    ``P[r, oc] = sum_{i, j, w} 2^(i+j) popcount(A_i[r, w] xor B_j[oc, w])``, then the
    epilogue.

    Parameters
    ----------
    packed : te.Tensor
        :func:`~.bitpack.pack_bitplanes_rows` output ``[B, M, Kw]``.
    weight : te.Tensor
        ``[OC / OCi, K, Kw, OCi]`` weight planes.
    epi, *params
        As for :func:`bitserial_conv2d_nchw`.
    out_features : int
        ``OC``.
    rowsum : te.Tensor, optional
        :func:`~.bitpack.row_popcount` output, needed when ``epi.needs_rowsum``.

    Returns
    -------
    te.Tensor
        ``[B, out_features]`` of ``epi.out_dtype``.
    """
    rows, m_bits, kw = (int(s) for s in packed.shape)
    _, k_bits, _, oc_inner = (int(s) for s in weight.shape)

    def operands(idx, i, j, _taps, rw):
        r, ob, oi = idx
        return packed[r, i, rw], weight[ob, j, rw, oi]

    p = _branch_popcounts((rows, out_features // oc_inner, oc_inner), m_bits, k_bits, (), kw,
                          operands, str(packed.dtype))
    return epilogue_compute(epi, params, {"r": rows, "oc": out_features},
                            lambda r, oc: p[r, oc // oc_inner, oc % oc_inner],
                            (lambda r, oc: rowsum[r]) if rowsum is not None else None)
