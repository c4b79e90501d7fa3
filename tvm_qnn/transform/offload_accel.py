# SPDX-License-Identifier: Apache-2.0
"""OffloadAccel: quantized conv2d / dense chains → accelerator call + host epilogue.

The target decides which layers an accelerator runs (``QnnTarget.offload``) and hands this
pass one :class:`OffloadedLayer` per layer name: the global function that runs the layer's
program and returns the branch sums P, and the plan whose epilogue turns P into the layer's
output on the host (the CPU kernels' epilogue, so both paths give the same bits). Layers not
named stay as they are, so :class:`~tvm_qnn.transform.RewriteBitserial` makes them CPU
bit-serial kernels afterwards.

Before::

    lv3 = R.quantize(R.nn.relu(R.nn.conv2d(R.dequantize(x_q, ...), W) + b), sy, zy)

After::

    p   = R.call_dps_packed("tvm_qnn.accel.<id>.0", (x_q,), R.Tensor((1, 14, 14, 4, 16), "int16"))
    lv3 = R.call_tir(accel_epilogue, (p, x_q, ...), R.Tensor((1, 64, 14, 14), "uint8"))
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from ..topi.attrs import LAYER_ATTR
from ..topi.layer import LayerPlan
from ..topi.layer_kernels import branch_epilogue_compute
from .layer_rewriter import LayerRewriter


@dataclass(frozen=True)
class OffloadedLayer:
    """One layer the accelerator runs: ``function(data, out)`` writes its branch sums P
    (``p_shape``, ``p_dtype``); ``plan``'s epilogue turns them into the layer's output."""

    plan: LayerPlan
    function: str
    p_shape: tuple[int, ...]
    p_dtype: str


@mutator
class _Offloader(LayerRewriter):
    def __init__(self, mod, layers: Mapping[str, OffloadedLayer]):
        super().__init__(mod)
        self.layers = layers

    def takes(self, match):
        return match.name in self.layers

    def rewrite_layer(self, match, data):
        layer = self.layers[match.name]
        p = self.builder_.emit(relax.call_dps_packed(
            layer.function, (data,), relax.TensorType(layer.p_shape, layer.p_dtype)))
        params = [relax.const(arr) for _, arr in layer.plan.epilogue.tensor_params()]
        return self.builder_.call_te(functools.partial(branch_epilogue_compute, layer.plan), p,
                                     data, *params, primfunc_name_hint="accel_epilogue",
                                     primfunc_attrs={LAYER_ATTR: match.name})


@tvm.transform.module_pass(opt_level=0, name="OffloadAccel")
class OffloadAccel:
    """Replace the named quantized layers by accelerator calls and host epilogues.

    Parameters
    ----------
    layers : mapping of str to OffloadedLayer
        The layers to offload, by layer name (:attr:`LayerMatch.name`).
    """

    def __init__(self, layers: Mapping[str, OffloadedLayer]):
        self.layers = dict(layers)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        return _Offloader(mod, self.layers).transform()


__all__ = ["OffloadAccel", "OffloadedLayer"]
