# SPDX-License-Identifier: Apache-2.0
"""Build and run single bit-serial layers, and make random ones (tests, benchmarks)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import tvm
from tvm import te

from ..pipeline import build_pipeline
from ..runtime.timing import evaluator_seconds
from ..target import resolve_target
from ..topi.attrs import KERNEL_ATTR
from ..topi.layer import QuantizedLayer, plan_layer, reference_output
from ..topi.layer_kernels import (
    chains_channels_last,
    layer_compute,
    packed_input_shape,
    reads_channels_last,
)
from ..topi.pack_channels_last import pack_channels_last_func
from ..topi.requantize import Requantize
from ..topi.thresholds import MAX_THRESHOLDS


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

    def __init__(self, layer: QuantizedLayer, target="x86", scheduled: bool = True,
                 max_thresholds: int = MAX_THRESHOLDS, integer_min_branches: int | None = None,
                 dot8_min_branches: int | None = None, lut_max_weight_bits: int | None = None):
        qnn_target = resolve_target(target)
        self.layer = layer
        # Alone, a layer is bit-serial unless ``integer_min_branches`` (the int32 kernel),
        # ``dot8_min_branches`` (the u8 x s8 dot kernel) or ``lut_max_weight_bits`` (the
        # table-lookup kernel, where the target has it) say otherwise.
        layout = replace(qnn_target.layout.with_lut(lut_max_weight_bits),
                         integer_min_branches=integer_min_branches,
                         dot8_min_branches=dot8_min_branches)
        self.plan = plan_layer(layer, layout, max_thresholds)
        data = te.placeholder(layer.input_shape, layer.input_dtype, "data")
        weight = te.placeholder(self.plan.packed_weight.shape,
                                str(self.plan.packed_weight.dtype), "weight")
        self._params = [arr for _, arr in self.plan.epilogue.tensor_params()]
        params = [te.placeholder(a.shape, str(a.dtype), name)
                  for name, a in self.plan.epilogue.tensor_params()]
        out = layer_compute(self.plan, data, weight, *params)
        func = te.create_prim_func([data, weight, *params, out])
        if scheduled:
            func = qnn_target.schedule(layer.kind, func)
        self.qnn_target = qnn_target
        self.func = func
        self.module = tvm.compile(func, qnn_target.tvm_target).mod
        self.device = tvm.cpu()
        if not qnn_target.runs_here():
            return  # cross-compiled: export() it and run it on the device
        self._args = [tvm.runtime.tensor(self.plan.packed_weight, self.device)]
        self._args += [tvm.runtime.tensor(a, self.device) for a in self._params]
        self._out = tvm.runtime.tensor(np.zeros(layer.output_shape, layer.output.out_dtype),
                                       self.device)

    def export(self, path) -> str:
        """Write the kernel as a shared library for its target (cross-linked if needed)."""
        self.qnn_target.export_library(self.module, str(path))
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
        return evaluator_seconds(self.module, self.module.entry_name, self.device, x,
                                 *self._args, self._out, number=number, repeat=repeat)


def _pow2_at_least(x: float) -> np.float32:
    return np.float32(2.0 ** np.ceil(np.log2(max(x, 1e-30))))


def random_layer(kind: str = "conv2d", *, act_bits: int = 2, weight_bits: int = 2,
                 in_channels: int = 8, out_channels: int = 8, size=(7, 7), kernel=(3, 3),
                 strides=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups: int = 1,
                 batch: int = 1, act_signed: bool = False, weight_signed: bool = True,
                 per_channel: bool = True, act_zero_point: int | None = None,
                 weight_zero_point: int = 0, relu: bool = True, out_quant: bool = True,
                 pow2_scales: bool = True, out_bits: int | None = None,
                 seed: int = 0) -> tuple[QuantizedLayer, np.ndarray]:
    """A random quantized layer and a random input of codes, with scales chosen so the
    output codes spread over their range (not all saturated or zero).

    ``out_bits``: clip the output codes to that many bits (``[0, 2^b - 1]`` after a ReLU), as a
    layer feeding a ``b``-bit layer does; None keeps the whole ``uint8``/``int8`` range.
    """
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
        input_dtype=dtype, output=Requantize(np.zeros(oc, np.float32)),
        strides=tuple(strides), pads=tuple(pads), dilation=tuple(dilation), groups=groups)
    # A bias that centres each channel (as trained layers are), so ReLU keeps about half.
    acc = reference_output(layer, xq.astype(dtype)) / (act_scale * w_scale).reshape(
        (1, -1) + (1,) * (len(xshape) - 2))
    centre = np.median(np.moveaxis(acc, 1, 0).reshape(oc, -1), axis=1)
    bias_q = -np.round(centre) + rng.integers(-2, 3, size=oc)
    bias = (bias_q * act_scale * w_scale).astype(np.float32)
    layer = replace(layer, output=Requantize(bias, clamp_lo=0.0 if relu else -np.inf))
    if not out_quant:
        return layer, xq.astype(dtype)
    spread = np.abs(reference_output(layer, xq.astype(dtype))).max()
    clip = out_bits is not None
    out_bits = out_bits or max(act_bits, 2)
    q_hi = (1 << out_bits) - 1 if relu else (1 << (out_bits - 1)) - 1
    levels = max(q_hi, 1)  # signed 1-bit codes are {-1, 0}
    out_scale = _pow2_at_least(spread / levels) if pow2_scales else np.float32(
        max(spread, 1e-3) / levels * 1.37)
    out_dtype = "uint8" if relu else "int8"
    qmin, qmax = int(np.iinfo(out_dtype).min), int(np.iinfo(out_dtype).max)
    if clip:
        qmin, qmax = (0, q_hi) if relu else (-q_hi - 1, q_hi)
    output = replace(layer.output, out_dtype=out_dtype,
                     out_scale=np.full(oc, out_scale, np.float32),
                     out_zero_point=np.zeros(oc, np.int32), qmin=qmin, qmax=qmax)
    return replace(layer, output=output), xq.astype(dtype)


def random_conv_case(*, act_bits: int, weight_bits: int, act_signed: bool, in_channels: int,
                     out_channels: int, size, kernel, strides, pads, dilation,
                     weight_zero_point: int, act_zero_point: int, **options):
    """A property test's random conv (:func:`random_layer`) from drawn parameters, or None
    when the window does not fit the padded input. ``act_zero_point`` is reduced to a code of
    ``act_bits`` bits (signed codes when ``act_signed``)."""
    if any(size[k] + pads[k] + pads[k + 2] < 1 + (kernel[k] - 1) * dilation[k] for k in (0, 1)):
        return None
    lo = -(1 << (act_bits - 1)) if act_signed else 0
    return random_layer("conv2d", act_bits=act_bits, weight_bits=weight_bits,
                        in_channels=in_channels, out_channels=out_channels, size=size,
                        kernel=kernel, strides=strides, pads=pads, dilation=dilation,
                        act_signed=act_signed, weight_zero_point=weight_zero_point,
                        act_zero_point=lo + act_zero_point % (1 << act_bits), **options)


class ChainedLayerKernel:
    """A conv as it runs inside a chain of convs: channels-last codes of the previous layer →
    the layer (channels-last codes out); a bit-serial one packs them into bit-planes first.

    What one layer of a network costs once codes flow channels-last between layers (the
    previous layer's epilogue writes NHWC; :mod:`tvm_qnn.topi.pack_channels_last` packs for a
    bit-serial layer, an int8-dot one reads them as they are): built as a Relax module with
    tvm_qnn's pipeline, run on the Relax VM. ``dot8_min_branches`` and
    ``lut_max_weight_bits`` as for :class:`LayerKernel` (None: bit-serial).
    """

    def __init__(self, layer: QuantizedLayer, target="x86", dot8_min_branches: int | None = None,
                 lut_max_weight_bits: int | None = None):
        import functools

        from tvm import relax

        qnn_target = resolve_target(target)
        plan = plan_layer(layer, replace(qnn_target.layout.with_lut(lut_max_weight_bits),
                                         integer_min_branches=None,
                                         dot8_min_branches=dot8_min_branches))
        packs = chains_channels_last(plan)
        if not packs and not reads_channels_last(plan):
            raise ValueError(f"layer {layer.name} does not take channels-last input "
                             "(groups or im2col)")
        n, c, h, w = layer.input_shape
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((n, h, w, c), layer.input_dtype))
        with bb.function("main", [x]):
            with bb.dataflow():
                data = x
                if packs:
                    pack = bb.add_func(pack_channels_last_func(
                        (n, h, w, c), layer.input_dtype, layer.act_lo, layer.act_bits,
                        layer.pads, plan.pad_code, plan.word_bits), "pack_channels_last")
                    data = bb.emit(relax.call_tir(pack, [x], relax.TensorType(
                        packed_input_shape(plan), f"uint{plan.word_bits}")))
                out = bb.emit(bb.call_te(
                    functools.partial(layer_compute, plan, packed_input=packs,
                                      channels_last_input=not packs, channels_last_output=True),
                    data, relax.const(plan.packed_weight),
                    *[relax.const(a) for _, a in plan.epilogue.tensor_params()],
                    primfunc_name_hint="bitserial_conv2d",
                    primfunc_attrs={KERNEL_ATTR: "conv2d", "op_pattern": 8}))
                result = bb.emit_output(out)
            bb.emit_func_output(result)
        exe = tvm.compile(bb.get(), qnn_target.tvm_target,
                          relax_pipeline=build_pipeline(qnn_target))
        self.layer, self.plan, self.qnn_target = layer, plan, qnn_target
        self.device = tvm.cpu()
        self.vm = relax.VirtualMachine(exe, self.device)

    def __call__(self, xq: np.ndarray) -> np.ndarray:
        """NCHW codes in, NCHW codes out (transposed on the host, around the NHWC kernel)."""
        x = np.ascontiguousarray(np.transpose(xq, (0, 2, 3, 1)), self.layer.input_dtype)
        out = self.vm["main"](tvm.runtime.tensor(x, self.device)).numpy()
        return np.transpose(out, (0, 3, 1, 2))

    def time(self, xq: np.ndarray, number: int = 20, repeat: int = 5) -> float:
        """Median seconds per call of pack + layer (TVM time_evaluator on the VM)."""
        x = np.ascontiguousarray(np.transpose(xq, (0, 2, 3, 1)), self.layer.input_dtype)
        return evaluator_seconds(self.vm, "main", self.device, tvm.runtime.tensor(x, self.device),
                                 number=number, repeat=repeat)
