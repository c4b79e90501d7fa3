# SPDX-License-Identifier: Apache-2.0
"""Integer numpy reference of a quantized layer: what every bit-serial kernel must equal.

The accumulator is exact integer arithmetic on ``(q_x - z_x)(q_w - z_w)``, with padding by the
activation zero-point (real zero); the epilogue replays the float32 operations of the fused
kernel in the same order (ONNX semantics: scale product, bias, clamp, divide by the output
scale, round half to even, add the zero-point, saturate).
"""

from __future__ import annotations

import numpy as np

#: Rounded codes are clamped to +-2**30 (exact in float32) before the cast to an integer: far
#: beyond every code range and zero-point, so saturation gives the same codes, while a cast of
#: a larger float (a huge scale, 1e30) is undefined (x86 gives INT_MIN: saturating to qmin
#: where ONNX gives qmax).
ROUNDED_BOUND = float(2**30)


def conv2d_accumulate(xq: np.ndarray, wq: np.ndarray, zx: int, zw: np.ndarray,
                      strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                      groups: int = 1) -> np.ndarray:
    """``sum (q_x - z_x)(q_w - z_w)`` of an NCHW conv2d, int64 ``[N, OC, OH, OW]``.

    ``pads`` is (top, left, bottom, right); padded positions are ``z_x``.
    """
    x = np.asarray(xq, np.int64) - int(zx)
    top, left, bottom, right = pads
    x = np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)])
    w = np.asarray(wq, np.int64) - np.asarray(zw, np.int64).reshape(-1, 1, 1, 1)
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilation
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (wd - dw * (kw - 1) - 1) // sw + 1
    ocg = oc // groups
    out = np.zeros((n, oc, oh, ow), np.int64)
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg]
        wg = w[g * ocg:(g + 1) * ocg]
        for ky in range(kh):
            for kx in range(kw):
                patch = xg[:, :, ky * dh:ky * dh + sh * (oh - 1) + 1:sh,
                           kx * dw:kx * dw + sw * (ow - 1) + 1:sw]
                out[:, g * ocg:(g + 1) * ocg] += np.einsum("nchw,oc->nohw", patch,
                                                           wg[:, :, ky, kx])
    return out


def dense_accumulate(xq: np.ndarray, wq: np.ndarray, zx: int, zw: np.ndarray) -> np.ndarray:
    """``sum_k (q_x[b, k] - z_x)(q_w[o, k] - z_w[o])``, int64 ``[B, OC]`` (``wq`` is [OC, K])."""
    x = np.asarray(xq, np.int64) - int(zx)
    w = np.asarray(wq, np.int64) - np.asarray(zw, np.int64).reshape(-1, 1)
    return x @ w.T


def requantize(acc: np.ndarray, mscale, bias, clamp_lo=-np.inf, clamp_hi=np.inf,
               out_scale=None, out_zero_point=None, qmin=None, qmax=None,
               channel_axis: int = 1, bipolar: bool = False) -> np.ndarray:
    """Float32 epilogue: ``v = acc * mscale + bias``, clamp, then optional quantization
    (``bipolar``: ``qmax`` where ``v >= 0``, else ``qmin``, QONNX's BipolarQuant).

    Per-channel arrays broadcast along ``channel_axis``. Returns float32 when ``out_scale`` is
    None, else int64 codes in ``[qmin, qmax]``.
    """
    shape = [1] * acc.ndim
    shape[channel_axis] = -1

    def per_channel(a, dtype):
        return np.asarray(a, dtype).reshape(shape) if np.ndim(a) else np.asarray(a, dtype)

    v = acc.astype(np.float32) * per_channel(mscale, np.float32) + per_channel(bias, np.float32)
    v = np.minimum(np.maximum(v, np.float32(clamp_lo)), np.float32(clamp_hi))
    if out_scale is None:
        return v
    if bipolar:
        return np.where(v >= 0, np.int64(qmax), np.int64(qmin))
    q = np.rint(v / per_channel(out_scale, np.float32))
    q = np.clip(q, -ROUNDED_BOUND, ROUNDED_BOUND).astype(np.int64)
    q = q + per_channel(out_zero_point, np.int64)
    return np.clip(q, qmin, qmax)
