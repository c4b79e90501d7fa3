# SPDX-License-Identifier: Apache-2.0
"""The channels-last bit-plane pack between two bit-serial convs, against numpy."""

import numpy as np
import pytest
import tvm

from tvm_qnn.topi.bitpack import words_for
from tvm_qnn.topi.pack_channels_last import pack_channels_last_func


def _numpy_planes(x, lo, bits, pads, pad_code, word_bits=64):
    """``[N, 1, bits, Hp, Wp, Cw]`` words: bit b of word w of plane i = bit i of the code at
    channel w * word_bits + b; padding holds ``pad_code``'s bits; bits past C are 0."""
    n, h, w, c = x.shape
    top, left, bottom, right = pads
    u = np.full((n, h + top + bottom, w + left + right, c), pad_code, np.int64)
    u[:, top:top + h, left:left + w] = x.astype(np.int64) - lo
    cw = words_for(c, word_bits)
    out = []
    for i in range(bits):
        plane = np.pad((u >> i) & 1, [(0, 0)] * 3 + [(0, cw * word_bits - c)])
        out.append(np.packbits(plane.astype(np.uint8), axis=-1, bitorder="little")
                   .view(f"<u{word_bits // 8}"))
    return np.stack(out, axis=1)[:, None]


# Channels: whole words, a last word of 8/16/32 channels (one vector compare) and other tails
# (bit by bit).
@pytest.mark.parametrize("channels", [5, 8, 16, 32, 40, 64, 72, 100, 160])
@pytest.mark.parametrize("bits,lo,dtype", [(1, 0, "uint8"), (2, -2, "int8"), (3, 0, "uint8")])
def test_pack_equals_numpy(channels, bits, lo, dtype):
    rng = np.random.default_rng(channels * 10 + bits)
    shape, pads, pad_code = (2, 3, 4, channels), (1, 2, 0, 1), 1
    func = pack_channels_last_func(shape, dtype, lo, bits, pads, pad_code, parallel=False)
    assert ("uint1x32" in func.script()) == (channels % 64 == 32)  # the vector tail path
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), "llvm")
    x = rng.integers(lo, lo + (1 << bits), shape).astype(dtype)
    want = _numpy_planes(x, lo, bits, pads, pad_code)
    out = tvm.runtime.tensor(np.zeros(want.shape, "uint64"))
    lib(tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), want)
