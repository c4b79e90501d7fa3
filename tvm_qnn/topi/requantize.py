# SPDX-License-Identifier: Apache-2.0
"""What follows a quantized layer's integer accumulator, in ONNX's terms: one value shared by
the layer as the matcher found it (:class:`~.layer.QuantizedLayer`) and the fused epilogue the
kernels compute (:class:`~.epilogue.Epilogue`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import reference


@dataclass(frozen=True, eq=False)
class Requantize:
    """The float32 tail of a layer after its accumulator ``acc`` and scale ``s = s_x s_w``::

        v = float(acc) * s + bias,  clamped to [clamp_lo, clamp_hi]   (ReLU, Clip; ±inf: none)
        q = clip(round_half_even(v / out_scale) + out_zero_point, qmin, qmax)   in out_dtype

    or, ``bipolar`` (QONNX's BipolarQuant), ``q = qmax if v >= 0 else qmin``: the sign codes.

    With ``out_scale`` None the output is ``v`` (float), or for an integer ``out_dtype`` the
    accumulator itself (ConvInteger / MatMulInteger). Per-channel values are arrays of length
    OC (or broadcast to it by :meth:`per_channel`).
    """

    bias: np.ndarray
    clamp_lo: float = -np.inf
    clamp_hi: float = np.inf
    out_dtype: str = "float32"
    out_scale: np.ndarray | None = None
    out_zero_point: np.ndarray | None = None
    qmin: int = 0
    qmax: int = 0
    bipolar: bool = False

    @property
    def quantized(self) -> bool:
        """True when the output is quantized (a QuantizeLinear: integer codes out)."""
        return self.out_scale is not None

    def per_channel(self, channels: int) -> Requantize:
        """The same tail with its arrays broadcast to ``channels`` (float32 bias and scale,
        int32 zero-point), as the kernels read them."""

        def per_oc(a, dtype):
            return None if a is None else np.broadcast_to(np.asarray(a, dtype),
                                                          (channels,)).copy()

        return Requantize(per_oc(self.bias, np.float32), self.clamp_lo, self.clamp_hi,
                          self.out_dtype, per_oc(self.out_scale, np.float32),
                          per_oc(self.out_zero_point, np.int32), self.qmin, self.qmax,
                          self.bipolar)

    def apply(self, acc: np.ndarray, scale, channel_axis: int = 1) -> np.ndarray:
        """The numpy reference (:func:`tvm_qnn.reference.requantize`) of this tail on the
        accumulator ``acc`` with the per-channel ``scale``: float32 values, or int64 codes."""
        return reference.requantize(acc, scale, self.bias, self.clamp_lo, self.clamp_hi,
                                    self.out_scale, self.out_zero_point, self.qmin, self.qmax,
                                    channel_axis=channel_axis, bipolar=self.bipolar)


__all__ = ["Requantize"]
