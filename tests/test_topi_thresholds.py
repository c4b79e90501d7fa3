# SPDX-License-Identifier: Apache-2.0
"""Integer-threshold requantization equals the float32 epilogue for every accumulator."""

import numpy as np
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_qnn import reference
from tvm_qnn.topi.requantize import Requantize
from tvm_qnn.topi.thresholds import requantize_thresholds

BOUND = 400  # |acc| <= BOUND: every value is checked


def _by_thresholds(steps, acc):
    """``base + #{k: s * 2acc >= t_k}`` for accumulators ``acc`` [OC, A]."""
    sign = np.where(steps.mirrored, -1, 1)[:, None]
    acc2 = sign * 2 * acc
    return steps.base[:, None] + (acc2[:, :, None] >= steps.values[:, None, :]).sum(-1)


@settings(max_examples=examples(200))
@given(oc=st.integers(1, 6), seed=st.integers(0, 2**16), signed_out=st.booleans(),
       out_bits=st.integers(1, 4), relu=st.booleans(), clamp_hi=st.sampled_from([np.inf, 0.7]),
       zero_scale=st.booleans())
def test_thresholds_equal_the_float_epilogue(oc, seed, signed_out, out_bits, relu, clamp_hi,
                                             zero_scale):
    rng = np.random.default_rng(seed)
    # Both signs of the layer scale (a negative one mirrors the channel), odd magnitudes.
    mscale = (rng.uniform(0.001, 0.05, oc) * rng.choice([-1, 1], oc)).astype(np.float32)
    if zero_scale:
        mscale[0] = 0.0
    bias = rng.uniform(-1, 1, oc).astype(np.float32)
    out_scale = rng.uniform(0.05, 0.5, oc).astype(np.float32)
    zp = rng.integers(-2, 3, oc)
    qmin, qmax = (-(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1) if signed_out \
        else (0, (1 << out_bits) - 1)
    clamp_lo = 0.0 if relu else -np.inf
    # Up to 15 steps (4-bit outputs): the mechanism, past the default limit (MAX_THRESHOLDS).
    steps = requantize_thresholds(mscale, Requantize(bias, clamp_lo, clamp_hi, "int8", out_scale,
                                                     zp, qmin, qmax), BOUND, max_thresholds=15)
    acc = np.broadcast_to(np.arange(-BOUND, BOUND + 1), (oc, 2 * BOUND + 1))
    want = reference.requantize(acc, mscale, bias, clamp_lo, clamp_hi, out_scale, zp, qmin,
                                qmax, channel_axis=0)
    if steps is None:  # only a constant output may be refused at these widths
        assert np.all(want == want[:, :1])
        return
    assert steps.values.shape[1] <= (1 << out_bits) - 1
    np.testing.assert_array_equal(_by_thresholds(steps, acc), want)


def test_many_codes_keep_the_float_epilogue():
    ones = np.ones(4, np.float32)
    assert requantize_thresholds(ones * 0.01, Requantize(ones * 0, out_dtype="int8",
                                                         out_scale=ones,
                                                         out_zero_point=np.zeros(4), qmin=-128,
                                                         qmax=127), 10_000) is None


def test_non_positive_or_non_finite_scales_keep_the_float_epilogue():
    ones = np.ones(2, np.float32)
    for out_scale in (np.array([1.0, 0.0], np.float32), np.array([1.0, np.nan], np.float32)):
        output = Requantize(ones * 0, 0.0, np.inf, "uint8", out_scale, np.zeros(2), 0, 3)
        assert requantize_thresholds(ones, output, 100) is None
