# SPDX-License-Identifier: Apache-2.0
"""The mutator every layer lowering shares: it replaces each matched quantized layer chain
(:func:`~.layer_matcher.find_layers`) by what the lowering builds."""

from __future__ import annotations

import logging

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator

from .graph_facts import FunctionFacts
from .layer_matcher import LayerMatch, find_layers

__all__ = ["LayerRewriter"]

logger = logging.getLogger("tvm_qnn.rewrite")


class LayerRewriter(PyExprMutator):
    """Replaces each matched quantized layer chain by what :meth:`rewrite_layer` builds.

    Subclasses (one per lowering: the CPU kernels here, the accelerator's offload) implement
    :meth:`rewrite_layer`; :meth:`takes` may decline a layer, which then stays as it is for a
    later pass.
    """

    def __init__(self, mod):
        super().__init__(mod)
        self.mod = mod
        self.plans: dict[relax.Var, LayerMatch] = {}
        self.skip: set = set()

    def takes(self, match: LayerMatch) -> bool:
        """Whether this lowering handles the (matched) layer; the default takes all."""
        return True

    def rewrite_layer(self, match: LayerMatch, data: relax.Expr) -> relax.Expr:
        """The expression computing ``match.end`` from the layer's input codes ``data``."""
        raise NotImplementedError

    def link_layers(self, facts: FunctionFacts) -> None:
        """Called once the function's layers are planned (``self.plans``), before rewriting:
        a lowering may decide here how its layers pass tensors to each other."""

    def transform(self) -> tvm.IRModule:
        """Rewrite every Relax function of the module."""
        for gvar, func in self.mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            self.plans.clear()
            self.skip.clear()
            for m in find_layers(func):
                if m.layer is None:
                    logger.info("%s (%s) stays as is: %s", m.name, m.kind, m.reason)
                    continue
                if not self.takes(m):
                    continue
                self.plans[m.anchor] = m
                self.skip.update(m.consumed)
            self.link_layers(FunctionFacts(func))
            updated = self.visit_expr(func)
            self.builder_.update_func(gvar, updated)
        return self.builder_.get()

    def visit_var_binding_(self, binding):  # noqa: D102
        var = binding.var
        if var in self.skip:
            return
        match = self.plans.get(var)
        if match is None:
            super().visit_var_binding_(binding)
            return
        data = self.visit_expr(match.data)
        if tuple(int(s) for s in match.data.ty.shape.values) != match.layer.input_shape:
            data = self.builder_.emit(relax.op.reshape(data, match.layer.input_shape))
        call = self.rewrite_layer(match, data)
        # The chain's last var may be a dataflow block output: keep it one.
        if isinstance(match.end, relax.DataflowVar):
            new = self.builder_.emit(call, name_hint=match.end.name)
        else:
            new = self.builder_.emit_output(call, name_hint=match.end.name)
        self.set_var_remap(match.end, new)
