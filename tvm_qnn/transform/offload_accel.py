# SPDX-License-Identifier: Apache-2.0
"""OffloadAccel: quantized conv2d / dense chains → accelerator call + host epilogue.

For every layer the accelerator can run (see :mod:`tvm_qnn.target.accel.lower`), the chain is
replaced by a call of the layer's driver, which runs the accelerator program and returns the
branch sums P, and a host PrimFunc that turns P into the layer's output (the CPU kernels'
epilogue). Layers it cannot run stay as they are, with the reason logged, so
:class:`~tvm_qnn.transform.RewriteBitserial` makes them CPU bit-serial kernels afterwards.

Before::

    lv3 = R.quantize(R.nn.relu(R.nn.conv2d(R.dequantize(x_q, ...), W) + b), sy, zy)

After::

    p   = R.call_dps_packed("tvm_qnn.accel.<id>.0", (x_q,), R.Tensor((1, 14, 14, 4, 16), "int16"))
    lv3 = R.call_tir(accel_epilogue, (p, x_q, ...), R.Tensor((1, 64, 14, 14), "uint8"))
"""

from __future__ import annotations

import functools
import logging
import uuid

import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from ..topi.layer import branch_epilogue_compute, plan_layer
from .rewrite_bitserial import LayerRewriter

logger = logging.getLogger("tvm_qnn")


@mutator
class _Offloader(LayerRewriter):
    def __init__(self, mod, owner: OffloadAccel):
        super().__init__(mod)
        self.owner = owner
        self.lowered = {}

    def takes(self, match):
        from ..target.accel.driver import AccelLayer
        from ..target.accel.lower import NotOffloadable, lower_layer

        from ..target.accel.lower import TilingChoice
        from ..tuning.accel import tiling_key

        plan = plan_layer(match.layer)
        try:
            record = (self.owner.tilings.get(tiling_key(plan, self.owner.config))
                      if self.owner.tilings else None)
            choice = TilingChoice() if record is None else TilingChoice(
                record["rows"], record["group_blocks"])
            lowered = lower_layer(plan, self.owner.config, choice)
        except NotOffloadable as err:
            logger.info("%s (%s): runs on the host CPU, not the accelerator: %s", match.name,
                        match.kind, err)
            self.owner.reasons[match.name] = str(err)
            return False
        bits = f"W{plan.weight_bits}A{match.layer.act_bits}"
        layer = AccelLayer(match.name, match.kind, bits, lowered)
        name = layer.register(f"tvm_qnn.accel.{self.owner.session}.{len(self.owner.layers)}")
        self.owner.layers[match.name] = layer
        self.lowered[match.anchor] = (plan, layer, name)
        logger.info("%s (%s): accelerator %s, %d weight group(s) x %d-row tiles%s", match.name,
                    match.kind, bits, len(lowered.tiling.groups), lowered.tiling.rows,
                    "" if record is None else " (tuned tiling)")
        return True

    def rewrite_layer(self, match, data):
        plan, layer, name = self.lowered[match.anchor]
        p = self.builder_.emit(relax.call_dps_packed(
            name, (data,), relax.TensorType(layer.out_shape, layer.lowered.p_dtype)))
        params = [relax.const(arr) for _, arr in plan.epilogue.tensor_params()]
        return self.builder_.call_te(functools.partial(branch_epilogue_compute, plan), p, data,
                                     *params, primfunc_name_hint="accel_epilogue",
                                     primfunc_attrs={"tvm_qnn.layer": match.name})


@tvm.transform.module_pass(opt_level=0, name="OffloadAccel")
class OffloadAccel:
    """Offload the quantized layers the accelerator ``config`` can run.

    Attributes
    ----------
    layers : dict of str to AccelLayer
        The offloaded layers by name (their drivers, for running and profiling).
    reasons : dict of str to str
        Why each layer that stayed on the CPU did.
    """

    def __init__(self, config, tilings: dict | None = None):
        self.config = config
        self.tilings = tilings or {}
        self.session = uuid.uuid4().hex[:12]  # global function names unique per compile
        self.layers = {}
        self.reasons = {}

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        return _Offloader(mod, self).transform()


__all__ = ["OffloadAccel"]
