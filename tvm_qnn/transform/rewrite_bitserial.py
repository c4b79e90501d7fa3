# SPDX-License-Identifier: Apache-2.0
"""RewriteBitserial: quantized conv2d / dense chains → one multi-branch bit-serial PrimFunc.

Each layer :func:`~.layer_matcher.find_layers` matches is replaced by one ``call_tir`` to
:func:`tvm_qnn.topi.layer_kernels.layer_compute` (activation packing at run time, weights
packed here with the target's :class:`~tvm_qnn.topi.layout.Layout`, the exact affine
correction terms, padding with the zero-point code, the fused requantize epilogue). Layers that
do not fit stay as they are, and the reason is logged. Codes between layers travel
channels-last wherever every reader takes them so (:mod:`.channels_last_links`: through
poolings, concats and residual sums; dense rows from 8 rows on), a bit-serial reader through
one vector pack into its bit-planes.

Before::

    lv1 = R.dequantize(x_q, sx, zx)
    lv2 = R.nn.conv2d(lv1, R.dequantize(W_q, sw, zw), padding=[1, 1, 1, 1])
    lv3 = R.quantize(R.nn.relu(lv2 + b), sy, zy)

After::

    lv3 = R.call_tir(bitserial_conv2d, (x_q, W_packed, ...), R.Tensor(..., "uint8"))
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from ..topi.attrs import BITS_ATTR, KERNEL_ATTR, LAYER_ATTR
from ..topi.dense_dot8 import plan_kernel
from ..topi.layer_kernels import (
    chains_channels_last,
    layer_compute,
    packed_input_shape,
    reads_channels_last,
)
from ..topi.layout import KernelChoice, Layout
from ..topi.pack_channels_last import pack_channels_last_func
from .channels_last_links import ChannelsLastLinks, link_channels_last
from .graph_facts import op_name
from .layer_rewriter import LayerRewriter

logger = logging.getLogger("tvm_qnn.rewrite")


# Below this many words the channels-last packing runs on one core (thread start-up dominates).
_PACK_PARALLEL_WORDS = 1 << 16
# A dense layer takes bit-planes from the dense layer before it from this many rows: Brevitas'
# LFC (3 links, Zen 4, one core) at 64 rows 0.65 against 0.72-0.75 ms (W1A2), at 1 row the
# same within noise (the separate pack call costs what the packing inside the kernel saves).
_DENSE_LINK_MIN_ROWS = 8


def layer_layout(layout: Layout, families: Mapping[str, KernelChoice], name: str,
                 layer) -> Layout:
    """``layout``, or the layout of the kernel family tuning chose for layers of ``layer``'s
    signature (``families``: signature → choice, as
    :func:`~tvm_qnn.tuning.families.read_kernel_families` reads them). ``name``: for the
    log."""
    choice = families.get(layer.signature)
    if choice is None:
        return layout
    logger.debug("%s: kernel family %s (%s)", name, choice.family, choice.why)
    return layout.with_family(choice.family)


@mutator
class _CpuRewriter(LayerRewriter):
    def __init__(self, mod, layout: Layout, families: Mapping[str, KernelChoice]):
        super().__init__(mod)
        self.layout = layout
        self.families = families
        self._plans = {}
        self.links = ChannelsLastLinks()

    def _plan(self, match):
        if match.anchor not in self._plans:
            self._plans[match.anchor] = plan_kernel(
                match.layer, layer_layout(self.layout, self.families, match.name, match.layer))
        return self._plans[match.anchor]

    def link_layers(self, facts):
        """Codes between layers travel channels-last where every reader takes them so
        (:func:`~.channels_last_links.link_channels_last`): through max poolings,
        concatenations and residual sums, to a bit-serial consumer through one vector pack
        into its bit-planes (instead of an NCHW write and a scalar pack inside it), to an
        int8-dot or integer one as they are (its channels-innermost input stage becomes a
        copy of rows instead of a gather across planes)."""
        self.links = link_channels_last(facts, self.plans, self._reads_nhwc)
        self.skip.update(self.links.skip)
        for anchor in sorted(self.links.consumers, key=facts.order.index):
            logger.info("%s: reads its input codes channels-last", self.plans[anchor].name)

    def _reads_nhwc(self, match) -> bool:
        plan = self._plan(match)
        if plan.layer.kind != match.layer.kind:  # a dense layer run as 1x1 convs
            return False
        if plan.layer.kind == "dense" and plan.layer.input_shape[0] < _DENSE_LINK_MIN_ROWS:
            return False
        return chains_channels_last(plan) or reads_channels_last(plan)

    def visit_var_binding_(self, binding):  # noqa: D102
        call = self.links.between.get(binding.var)
        name = op_name(call)
        if name not in ("relax.concat", "relax.nn.max_pool2d"):
            super().visit_var_binding_(binding)  # elementwise ops take NHWC as they are
            return
        if name == "relax.concat":  # channels are the last axis now
            new = relax.op.concat([self.visit_expr(f) for f in call.args[0].fields], axis=3)
        else:
            attrs = call.attrs  # the same pooling, on channels-last codes
            new = relax.op.nn.max_pool2d(
                self.visit_expr(call.args[0]), [int(v) for v in attrs.pool_size],
                [int(v) for v in attrs.strides], [int(v) for v in attrs.padding],
                [int(v) for v in attrs.dilation], bool(attrs.ceil_mode), layout="NHWC")
        self.set_var_remap(binding.var, self.builder_.emit(new, name_hint=binding.var.name))

    def _pack(self, plan, codes: relax.Expr) -> relax.Expr:
        """Emit the channels-last pack of ``codes`` (NHWC, or a dense layer's rows) into
        ``plan``'s bit-planes."""
        layer = plan.layer
        shape = packed_input_shape(plan)
        if layer.kind == "dense":  # rows as 1x1 images: no padding, planes [N, M, Cw]
            (n, c), (h, w), pads = layer.input_shape, (1, 1), (0, 0, 0, 0)
            codes = self.builder_.emit(relax.op.reshape(codes, (n, h, w, c)))
        else:
            (n, c, h, w), pads = layer.input_shape, layer.pads
        func = pack_channels_last_func(
            (n, h, w, c), layer.input_dtype, layer.act_lo, layer.act_bits, pads,
            plan.pad_code, plan.word_bits,
            parallel=int(np.prod(shape)) >= _PACK_PARALLEL_WORDS, shift=layer.act_shift)
        gvar = self.builder_.add_func(func, "pack_channels_last")
        planes = relax.call_tir(gvar, [codes], relax.TensorType(
            (n, 1, layer.act_bits, h + pads[0] + pads[2], w + pads[1] + pads[3], shape[-1]),
            f"uint{plan.word_bits}"))
        if layer.kind == "dense":
            planes = relax.op.reshape(self.builder_.emit(planes), shape)
        return self.builder_.emit(planes)

    def rewrite_layer(self, match, data):
        plan = self._plan(match)
        if plan.layer.kind != match.layer.kind:  # a dense layer as 1x1 convs (dense_dot8)
            rows, features = match.layer.input_shape
            image = self.builder_.emit(relax.op.reshape(
                relax.op.permute_dims(data, [1, 0]), (1, features, 1, rows)))
            out = self.builder_.emit(self._kernel_call(match, plan, image, True))
            return relax.op.reshape(out, match.layer.output_shape)
        return self._kernel_call(match, plan, data, match.anchor in self.links.producers)

    def _kernel_call(self, match, plan, data, channels_last_output: bool):
        params = [relax.const(arr) for _, arr in plan.epilogue.tensor_params()]
        kind = plan.layer.kind
        linked = match.anchor in self.links.consumers  # reads NHWC codes
        packed_in = linked and chains_channels_last(plan)
        if packed_in:
            data = self._pack(plan, data)
        if plan.kernel != "bit-serial":
            logger.info("%s (%s): %s kernel for W%dA%d (%d popcount branches would cost more)",
                        match.name, kind, plan.kernel, plan.weight_bits, match.layer.act_bits,
                        plan.branches)
        else:
            logger.info("%s (%s): bit-serial W%dA%d, %d branches", match.name, kind,
                        plan.weight_bits, match.layer.act_bits, plan.branches)
        compute = functools.partial(layer_compute, plan, packed_input=packed_in,
                                    channels_last_input=linked and not packed_in,
                                    channels_last_output=channels_last_output)
        return self.builder_.call_te(
            compute,
            data,
            relax.const(plan.packed_weight),
            *params,
            primfunc_name_hint=f"bitserial_{kind}",
            primfunc_attrs={KERNEL_ATTR: kind, "op_pattern": 8, LAYER_ATTR: match.name,
                            BITS_ATTR: f"W{plan.weight_bits}A{match.layer.act_bits}"},
        )


@tvm.transform.module_pass(opt_level=0, name="RewriteBitserial")
class RewriteBitserial:
    """Replace quantized conv2d / dense chains by fused multi-branch bit-serial PrimFuncs.

    Parameters
    ----------
    layout : Layout
        The target's kernel layout (:class:`~tvm_qnn.topi.layout.Layout`: output channels per
        weight vector, word width, from how many branches a conv gets the integer kernel).
        The default keeps every layer bit-serial with 16-channel vectors of 64-bit words.
    families : Mapping[str, KernelChoice], optional
        Layer signature → the kernel family tuning measured fastest for it
        (:func:`tvm_qnn.tuning.families.read_kernel_families`); other layers get the one
        ``layout``'s cost model picks.
    """

    def __init__(self, layout: Layout = Layout(),
                 families: Mapping[str, KernelChoice] | None = None):
        self.layout = layout
        self.families = dict(families or {})

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        mod = _CpuRewriter(mod, self.layout, self.families).transform()
        return relax.transform.DeadCodeElimination()(mod)


__all__ = ["RewriteBitserial", "layer_layout"]
