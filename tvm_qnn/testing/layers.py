# SPDX-License-Identifier: Apache-2.0
"""Build and run single bit-serial layers, and make random ones (tests, benchmarks)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te

from ..target import resolve_target
from ..topi.layer import QuantizedLayer, layer_compute, plan_layer


class LayerKernel:
    """One layer compiled alone: ``kernel(xq)`` returns its output as numpy.

    Attributes
    ----------
    plan : LayerPlan
        Packed weights and epilogue constants the kernel was built with.
    func : tvm.tirx.PrimFunc
        The (scheduled) PrimFunc the module was built from.
    module : tvm.runtime.Module
        The compiled module (``inspect_source("asm")`` shows the generated code).
    """

    def __init__(self, layer: QuantizedLayer, target="x86", scheduled: bool = True):
        backend = resolve_target(target)
        self.layer = layer
        self.plan = plan_layer(layer, backend.oc_block, backend.word_bits)
        data = te.placeholder(layer.input_shape, layer.input_dtype, "data")
        weight = te.placeholder(self.plan.packed_weight.shape,
                                str(self.plan.packed_weight.dtype), "weight")
        self._params = [arr for _, arr in self.plan.epilogue.tensor_params()]
        params = [te.placeholder(a.shape, str(a.dtype), name)
                  for name, a in self.plan.epilogue.tensor_params()]
        out = layer_compute(self.plan, data, weight, *params)
        func = te.create_prim_func([data, weight, *params, out])
        if scheduled:
            func = backend.schedule(layer.kind, func)
        self.backend = backend
        self.func = func
        self.module = tvm.compile(func, backend.tvm_target).mod
        self.device = tvm.cpu()
        if not backend.runs_here():
            return  # cross-compiled: export() it and run it on the device
        self._args = [tvm.runtime.tensor(self.plan.packed_weight, self.device)]
        self._args += [tvm.runtime.tensor(a, self.device) for a in self._params]
        self._out = tvm.runtime.tensor(np.zeros(layer.output_shape, layer.out_dtype),
                                       self.device)

    def export(self, path) -> str:
        """Write the kernel as a shared library for its target (cross-linked if needed)."""
        self.backend.export_library(self.module, str(path))
        return str(path)

    def arguments(self, xq: np.ndarray) -> list[np.ndarray]:
        """The kernel's inputs for codes ``xq``: data, packed weights, epilogue params."""
        return [np.ascontiguousarray(xq, self.layer.input_dtype), self.plan.packed_weight,
                *self._params]

    def __call__(self, xq: np.ndarray) -> np.ndarray:
        x = tvm.runtime.tensor(np.ascontiguousarray(xq, self.layer.input_dtype), self.device)
        self.module(x, *self._args, self._out)
        return self._out.numpy()

    def time(self, xq: np.ndarray, number: int = 20, repeat: int = 5) -> float:
        """Median seconds per call (TVM time_evaluator)."""
        x = tvm.runtime.tensor(np.ascontiguousarray(xq, self.layer.input_dtype), self.device)
        timer = self.module.time_evaluator(self.module.entry_name, self.device, number=number,
                                           repeat=repeat)
        return float(np.median(timer(x, *self._args, self._out).results))


def _pow2_at_least(x: float) -> np.float32:
    return np.float32(2.0 ** np.ceil(np.log2(max(x, 1e-30))))


def random_layer(kind: str = "conv2d", *, act_bits: int = 2, weight_bits: int = 2,
                 in_channels: int = 8, out_channels: int = 8, size=(7, 7), kernel=(3, 3),
                 strides=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups: int = 1,
                 batch: int = 1, act_signed: bool = False, weight_signed: bool = True,
                 per_channel: bool = True, act_zero_point: int | None = None,
                 weight_zero_point: int = 0, relu: bool = True, out_quant: bool = True,
                 pow2_scales: bool = True, seed: int = 0) -> tuple[QuantizedLayer, np.ndarray]:
    """A random quantized layer and a random input of codes, with scales chosen so the
    output codes spread over their range (not all saturated or zero)."""
    rng = np.random.default_rng(seed)
    a_lo = -(1 << (act_bits - 1)) if act_signed else 0
    a_hi = a_lo + (1 << act_bits) - 1
    if weight_bits == 1 and weight_signed:
        w_levels = np.array([-1, 1])
    else:
        w_lo = -(1 << (weight_bits - 1)) if weight_signed else 0
        w_levels = np.arange(w_lo, w_lo + (1 << weight_bits))
    if kind == "conv2d":
        wshape = (out_channels, in_channels // groups) + tuple(kernel)
        xshape = (batch, in_channels) + tuple(size)
    else:
        wshape = (out_channels, in_channels)
        xshape = (batch, in_channels)
    weight = rng.choice(w_levels, size=wshape).astype(np.int64)
    xq = rng.integers(a_lo, a_hi + 1, size=xshape)
    zx = int(rng.integers(a_lo, a_hi + 1)) if act_zero_point is None else act_zero_point

    def scale(n):
        s = rng.uniform(0.01, 0.1, size=n).astype(np.float32)
        return np.float32(2.0) ** np.round(np.log2(s)) if pow2_scales else s

    oc = out_channels
    w_scale = scale(oc) if per_channel else np.full(oc, scale(1)[0], np.float32)
    act_scale = float(scale(1)[0])
    dtype = "int8" if act_signed else "uint8"
    layer = QuantizedLayer(
        kind=kind, name="layer", input_shape=xshape, weight=weight,
        weight_scale=w_scale.astype(np.float32),
        weight_zero_point=np.full(oc, weight_zero_point, np.int64),
        act_scale=act_scale, act_zero_point=zx, act_lo=a_lo, act_bits=act_bits,
        input_dtype=dtype, bias=np.zeros(oc, np.float32),
        strides=tuple(strides), pads=tuple(pads), dilation=tuple(dilation), groups=groups)
    from ..topi.layer import reference_output

    # A bias that centres each channel (as trained layers are), so ReLU keeps about half.
    acc = reference_output(layer, xq.astype(dtype)) / (act_scale * w_scale).reshape(
        (1, -1) + (1,) * (len(xshape) - 2))
    centre = np.median(np.moveaxis(acc, 1, 0).reshape(oc, -1), axis=1)
    bias_q = -np.round(centre) + rng.integers(-2, 3, size=oc)
    bias = (bias_q * act_scale * w_scale).astype(np.float32)
    fields = dict(layer.__dict__)
    fields.update(bias=bias, clamp_lo=0.0 if relu else -np.inf)
    layer = QuantizedLayer(**fields)
    if not out_quant:
        return layer, xq.astype(dtype)
    spread = np.abs(reference_output(layer, xq.astype(dtype))).max()
    out_bits = max(act_bits, 2)
    q_hi = (1 << out_bits) - 1 if relu else (1 << (out_bits - 1)) - 1
    out_scale = _pow2_at_least(spread / q_hi) if pow2_scales else np.float32(
        max(spread, 1e-3) / q_hi * 1.37)
    out_dtype = "uint8" if relu else "int8"
    info = np.iinfo(out_dtype)
    fields = dict(layer.__dict__)
    fields.update(out_dtype=out_dtype, out_scale=np.full(oc, out_scale, np.float32),
                  out_zero_point=np.zeros(oc, np.int32), qmin=int(info.min), qmax=int(info.max))
    return QuantizedLayer(**fields), xq.astype(dtype)
