# SPDX-License-Identifier: Apache-2.0
"""Facts about a Relax function that the rewrite needs: bindings, uses, constants, code ranges.

Constants are evaluated in numpy with ONNX semantics (QuantizeLinear rounds half to even), so a
weight written as ``float const → quantize → clip → dequantize`` still yields its integer codes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator


def prim_value(expr):
    """Python number held by a Relax ``PrimValue`` (clip bounds and similar)."""
    return expr.value


def op_name(expr) -> str | None:
    """Name of the Relax op a call invokes (e.g. ``relax.nn.conv2d``), else None."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


class FunctionFacts:
    """Bindings and use counts of one Relax function (the function is not changed)."""

    def __init__(self, func: relax.Function):
        self.bindings: dict[relax.Var, relax.Expr] = {}
        self.order: list[relax.Var] = []
        self.uses: dict[relax.Var, int] = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                value = getattr(binding, "value", None)
                self.bindings[binding.var] = value
                self.order.append(binding.var)
                if value is not None:
                    self._count(value)
        self._count(func.body.body)
        self.returned: set[relax.Var] = set(_free_vars(func.body.body))
        self.users: dict[relax.Var, list[relax.Var]] = {}
        for var in self.order:
            for used in _free_vars(self.bindings[var]):
                self.users.setdefault(used, []).append(var)

    def _count(self, expr):
        """Count every occurrence of a variable in ``expr`` (``y * y`` uses ``y`` twice)."""

        def visit(node):
            if isinstance(node, relax.Var):
                self.uses[node] = self.uses.get(node, 0) + 1

        relax.analysis.post_order_visit(expr, visit)

    def value_of(self, expr):
        """Follow variables to the expression that defines them."""
        while isinstance(expr, relax.Var) and expr in self.bindings:
            expr = self.bindings[expr]
        return expr

    def single_user(self, var: relax.Var) -> relax.Var | None:
        """The binding var of the only use of ``var`` (None if used ≠ 1 times or in a return)."""
        users = self.users.get(var, [])
        if self.uses.get(var, 0) != 1 or len(users) != 1:
            return None
        return users[0]

    def constant(self, expr) -> np.ndarray | None:
        """Evaluate ``expr`` if it is built from constants only, else None."""
        expr = self.value_of(expr)
        if isinstance(expr, tvm.ir.expr.GenericConst):
            return expr.value.numpy()
        if isinstance(expr, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):  # a PrimValue
            return np.asarray(expr.value)
        name = op_name(expr)
        if name is None:
            return None
        args = []
        for arg in expr.args:
            if isinstance(arg, relax.ShapeExpr):
                args.append(np.asarray([int(v) for v in arg.values]))
                continue
            value = self.constant(arg)
            if value is None:
                return None
            args.append(value)
        return _eval_op(name, expr, args)

    def code_range(self, expr) -> tuple[int, int] | None:
        """Bounds of the integer codes ``expr`` can hold (from clips, quantize and dtypes)."""
        dtype = str(expr.ty.dtype) if hasattr(expr.ty, "dtype") else ""
        if "int" not in dtype:
            return None
        info = np.iinfo(dtype)
        lo, hi = int(info.min), int(info.max)
        value = self.value_of(expr)
        if op_name(value) in _RANGE_KEEPING and str(value.args[0].ty.dtype) == dtype:
            return self.code_range(value.args[0])
        if (parts := self._concat_parts(value)) is not None:  # the union of the parts' codes
            ranges = [self.code_range(p) for p in parts]
            return min(r[0] for r in ranges), max(r[1] for r in ranges)
        if op_name(value) == "relax.astype":  # a cast of codes that fit keeps their range
            inner = self.code_range(value.args[0])
            if inner is not None and lo <= inner[0] and inner[1] <= hi:
                return inner
        if op_name(value) == "relax.clip":
            inner = self.code_range(value.args[0]) or (lo, hi)
            lo = max(inner[0], int(prim_value(value.args[1])))
            hi = min(inner[1], int(prim_value(value.args[2])))
        elif (pair := self._where_codes(value)) is not None:
            lo, hi = min(pair), max(pair)
        return lo, hi

    def code_step(self, expr) -> int:
        """The step between the codes ``expr`` can hold: 2 for QONNX's bipolar
        ``where(x >= 0, 1, -1)`` (two codes, two apart), else 1."""
        value = self.value_of(expr)
        name = op_name(value)
        if name in _RANGE_KEEPING:
            return self.code_step(value.args[0])
        if (parts := self._concat_parts(value)) is not None:
            # Part k holds lo_k + n step_k: one grid whose step divides every step_k and
            # every offset lo_k - lo_0.
            los = [self.code_range(p)[0] for p in parts]
            return math.gcd(*(self.code_step(p) for p in parts), *(lo - los[0] for lo in los)) \
                or 1
        if name == "relax.clip":  # a clip that cuts no code keeps the step
            inner = self.code_range(value.args[0])
            cut = inner is None or int(prim_value(value.args[1])) > inner[0] \
                or int(prim_value(value.args[2])) < inner[1]
            return 1 if cut else self.code_step(value.args[0])
        pair = self._where_codes(value)
        return abs(pair[0] - pair[1]) or 1 if pair is not None else 1

    def _concat_parts(self, value) -> list | None:
        """The tensors a ``relax.concat`` of integer codes joins, else None."""
        if op_name(value) != "relax.concat" or "int" not in str(value.ty.dtype):
            return None
        tup = self.value_of(value.args[0])
        return list(tup.fields) if isinstance(tup, relax.Tuple) else None

    def _where_codes(self, value) -> tuple[int, int] | None:
        """``where(cond, a, b)`` of two integer scalar constants → ``(a, b)``."""
        if op_name(value) != "relax.where" or "int" not in str(value.ty.dtype):
            return None
        a, b = (self.constant(arg) for arg in value.args[1:3])
        if a is None or b is None or a.size != 1 or b.size != 1:
            return None
        return int(a.reshape(())), int(b.reshape(()))


# Ops whose output codes are some of their input's codes (a pooled maximum, a reshape): they
# keep the input's code range.
_RANGE_KEEPING = ("relax.nn.max_pool2d", "relax.reshape", "relax.permute_dims")


def bound_value(mutator, expr):
    """In a ``PyExprMutator``: follow variables to the expressions bound to them."""
    while isinstance(expr, relax.Var):
        bound = mutator.lookup_binding(expr)
        if bound is None:
            break
        expr = bound
    return expr


def mutate_functions(mod: tvm.IRModule, mutator) -> tvm.IRModule:
    """Run a ``PyExprMutator`` over every Relax function of ``mod``; the mutated module."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()


# A rule: (builder, call, value_of) → the expression replacing ``call``, or None to keep it.
Rule = Callable[[relax.BlockBuilder, relax.Call, Callable], "relax.Expr | None"]


@mutator
class _CallRewriter(PyExprMutator):
    def __init__(self, mod, rules: Mapping[str, Rule]):
        super().__init__(mod)
        self.rules = rules

    def visit_call_(self, call):  # noqa: D102
        call = super().visit_call_(call)
        rule = self.rules.get(op_name(call))
        new = rule(self.builder_, call, lambda e: bound_value(self, e)) if rule else None
        return call if new is None else new


def rewrite_calls(mod: tvm.IRModule, rules: Mapping[str, Rule]) -> tvm.IRModule:
    """Replace the calls of every Relax function of ``mod`` by their op's rule
    (``{op name: rule}``), then drop what is left unused. Bindings are visited in order, so a
    rule sees its operands already rewritten: rules given together compose in one traversal
    (a concat of pooled codes of a concat…)."""
    mod = mutate_functions(mod, _CallRewriter(mod, rules))
    return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))


def _free_vars(expr) -> list[relax.Var]:
    return list(relax.analysis.used_vars(expr)) if expr is not None else []


def _axis_shape(ndim: int, axis: int, size: int) -> list[int]:
    shape = [1] * ndim
    shape[axis] = size
    return shape


def _qparam(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if param.size <= 1:
        return param.reshape(())
    return param.reshape(_axis_shape(ndim, axis % ndim, param.size))


_COMPARISONS = {"relax.greater_equal": np.greater_equal, "relax.greater": np.greater,
                "relax.less_equal": np.less_equal, "relax.less": np.less}


def _eval_op(name: str, call: relax.Call, args: list[np.ndarray]) -> np.ndarray | None:
    """numpy semantics of the few ops that appear around quantized constants."""
    attrs = call.attrs
    if name == "relax.quantize":
        x, scale, zp = args
        axis = int(attrs.axis)
        q = np.rint(x.astype(np.float32) / _qparam(scale.astype(np.float32), x.ndim, axis))
        q = q + _qparam(zp.astype(np.float64), x.ndim, axis)
        info = np.iinfo(str(attrs.out_dtype))
        return np.clip(q, info.min, info.max).astype(str(attrs.out_dtype))
    if name == "relax.dequantize":
        x, scale, zp = args
        axis = int(attrs.axis)
        shifted = x.astype(np.int32) - _qparam(zp.astype(np.int32), x.ndim, axis)
        return (shifted.astype(np.float32)
                * _qparam(scale.astype(np.float32), x.ndim, axis)).astype(np.float32)
    if name == "relax.clip":
        return np.clip(args[0], args[1], args[2]).astype(args[0].dtype)
    if name == "relax.reshape":
        return args[0].reshape([int(s) for s in call.ty.shape.values])
    if name == "relax.permute_dims":
        axes = None if attrs.axes is None else [int(a) for a in attrs.axes]
        return np.transpose(args[0], axes)
    if name == "relax.astype":
        return args[0].astype(str(attrs.dtype))
    if name == "relax.expand_dims":
        return args[0].reshape([int(s) for s in call.ty.shape.values])
    if name == "relax.where":  # QONNX BipolarQuant of a constant: where(w >= 0, 1, -1)
        return np.where(args[0], args[1], args[2]).astype(str(call.ty.dtype))
    if name in _COMPARISONS:
        return _COMPARISONS[name](args[0], args[1])
    if name in ("relax.add", "relax.multiply", "relax.subtract"):
        fn = {"relax.add": np.add, "relax.multiply": np.multiply,
              "relax.subtract": np.subtract}[name]
        return fn(args[0], args[1]).astype(str(call.ty.dtype))
    return None
