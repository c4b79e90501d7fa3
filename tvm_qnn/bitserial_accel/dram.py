# SPDX-License-Identifier: Apache-2.0
"""DRAM layouts of the accelerator's data: bit-plane packing and accumulator vectors.

An element of an input (weight) tensor in DRAM is ``bits`` consecutive entries, plane 0 first;
an entry is ``rows`` (batch, resp. block_out) rows of ``block_in`` bits, lane k of a row in
bit k % 8 of byte k // 8 (little-endian bit order, as the 64-bit words the core pops).
"""

from __future__ import annotations

import numpy as np


def pack_planes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes ``[..., rows, block_in]`` -> uint8 ``[..., bits, rows, block_in // 8]``.

    Plane i holds bit i of every code (u = sum_i 2^i u_i, DESIGN.md §1); in the bipolar reading
    a set bit is +1 and a clear bit -1.
    """
    codes = np.asarray(codes)
    if codes.shape[-1] % 8:
        raise ValueError(f"block_in ({codes.shape[-1]}) must be a multiple of 8")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise ValueError(f"codes must be in [0, 2^{bits})")
    planes = (codes[..., None, :, :].astype(np.int64) >> np.arange(bits)[:, None, None]) & 1
    return np.packbits(planes.astype(np.uint8), axis=-1, bitorder="little")


def unpack_planes(packed: np.ndarray, block_in: int) -> np.ndarray:
    """Inverse of :func:`pack_planes`: uint8 ``[..., bits, rows, block_in // 8]`` -> codes."""
    planes = np.unpackbits(np.asarray(packed, np.uint8), axis=-1, count=block_in,
                           bitorder="little").astype(np.int64)
    bits = planes.shape[-3]
    return (planes << np.arange(bits)[:, None, None]).sum(axis=-3)


def acc_bytes(values: np.ndarray) -> np.ndarray:
    """int32 accumulator vectors ``[..., batch, block_out]`` as DRAM bytes (LOAD ACC)."""
    return np.ascontiguousarray(np.asarray(values, dtype="<i4")).view(np.uint8).reshape(-1)


def read_output(dram: np.ndarray, byte_offset: int, count: int, out_bytes: int = 4) -> np.ndarray:
    """``count`` signed integers of ``out_bytes`` bytes each, as STORE wrote them."""
    dtype = {1: "<i1", 2: "<i2", 4: "<i4"}[out_bytes]
    return np.frombuffer(bytes(dram[byte_offset:byte_offset + count * out_bytes]), dtype=dtype)
