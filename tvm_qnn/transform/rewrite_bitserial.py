# SPDX-License-Identifier: Apache-2.0
"""RewriteBitserial: quantized conv2d / dense chains → one multi-branch bit-serial PrimFunc.

Two spellings of a quantized layer are matched (the frontend emits both):

* float (QDQ / QCDQ / int4)::

      y = quantize(act(conv2d|matmul(dequantize(xq, sx, zx), dequantize(Wq, sw, zw)) + bias),
                   sy, zy) [→ clip]

  where the trailing ``add`` / ReLU / Clip / quantize are optional (no quantize: float output);
* integer (QLinearConv / QLinearMatMul / ConvInteger / MatMulInteger)::

      acc = conv2d|matmul(astype(xq, i32) - zx, Wq - zw) [+ B]
      y   = quantize(float(acc) * m, 1, zy) [→ clip]            # or acc itself (int32)

Every op of the chain but the first must have a single user. The chain is replaced by one
``call_tir`` to :func:`tvm_qnn.topi.layer.layer_compute` (activation packing at run time,
weights packed here, the exact affine correction terms, padding with the zero-point code, the
fused requantize epilogue). Layers that do not fit stay as they are, and the reason is logged.

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
import re
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..topi.layer import (MAX_BITS, QuantizedLayer, chains_channels_last, layer_compute,
                          packed_input_shape, plan_layer)
from ..topi.pack_channels_last import pack_channels_last_func
from .graph_facts import FunctionFacts, op_name, prim_value

logger = logging.getLogger("tvm_qnn.rewrite")

KERNEL_ATTR = "tvm_qnn.kernel"


@dataclass(frozen=True, eq=False)
class LayerMatch:
    """Outcome of matching one conv2d/matmul: a layer to rewrite, or why it stays as is."""

    name: str
    kind: str
    anchor: relax.Var
    layer: QuantizedLayer | None = None
    end: relax.Var | None = None
    consumed: tuple = ()
    data: relax.Var | None = None
    reason: str = ""
    macs: int = 0


class _NoMatch(Exception):
    """Raised inside matching with the reason a layer stays as is."""


def _scalar_int(arr: np.ndarray | None, what: str) -> int:
    if arr is None or arr.size != 1:
        raise _NoMatch(f"{what} must be a per-tensor constant")
    return int(arr.reshape(()))


def _per_channel(arr: np.ndarray, channels: int, what: str, dtype) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.size == 1:
        return np.full(channels, arr.reshape(()), dtype)
    if arr.size != channels:
        raise _NoMatch(f"{what} has {arr.size} values for {channels} output channels")
    return arr.reshape(channels).astype(dtype)


class _Matcher:
    """Reads quantized layers off one function's :class:`FunctionFacts`."""

    def __init__(self, facts: FunctionFacts):
        self.facts = facts

    def match(self, anchor: relax.Var) -> LayerMatch | None:
        call = self.facts.bindings[anchor]
        name = op_name(call)
        if name not in ("relax.nn.conv2d", "relax.matmul"):
            return None
        kind = "conv2d" if name == "relax.nn.conv2d" else "dense"
        macs = _macs(call, kind)
        try:
            fields, data = self._core(call, kind)
            fields, end, consumed = self._epilogue(anchor, fields)
            layer = QuantizedLayer(kind=kind, name=anchor.name, **fields)
            self._validate(layer)
        except _NoMatch as err:
            return LayerMatch(self._display_name(self._users_chain(anchor)), kind, anchor,
                              reason=str(err), macs=macs)
        return LayerMatch(self._display_name([anchor, *consumed]), kind, anchor, layer, end,
                          tuple(consumed), data, macs=macs)

    def _users_chain(self, var, limit: int = 3) -> list:
        """``var`` and up to ``limit`` single-user successors (where its node name may sit)."""
        chain = [var]
        while len(chain) <= limit and (nxt := self.facts.single_user(chain[-1])) is not None:
            chain.append(nxt)
        return chain

    def _display_name(self, chain) -> str:
        """The ONNX node name of a layer: the first binding of its chain not named ``lv…``."""
        for var in chain:
            if not re.fullmatch(r"(lv|gv)\d*", var.name):
                return var.name
        return chain[0].name

    # -- the conv/matmul and its operands ---------------------------------------------------

    def _core(self, call: relax.Call, kind: str):
        facts = self.facts
        x_expr, w_expr = call.args
        x_val = facts.value_of(x_expr)
        fields = {}
        # Per-tensor dequantize commutes with a reshape (ONNX Flatten before a Gemm): the
        # codes are reshaped instead, to the shape the conv/matmul reads.
        x_shape = tuple(int(s) for s in x_expr.ty.shape.values)
        if op_name(x_val) == "relax.reshape" and \
                op_name(facts.value_of(x_val.args[0])) == "relax.dequantize":
            x_val = facts.value_of(x_val.args[0])
        if op_name(x_val) == "relax.dequantize":  # float spelling
            xq = x_val.args[0]
            sx = facts.constant(x_val.args[1])
            if sx is None or sx.size != 1:
                raise _NoMatch("activation scale must be a per-tensor constant")
            fields["act_scale"] = float(np.float32(sx.reshape(())))
            fields["act_zero_point"] = _scalar_int(facts.constant(x_val.args[2]),
                                                   "activation zero-point")
            weight, w_scale, w_zp = self._float_weight(w_expr, kind)
        elif str(call.ty.dtype) == "int32":  # integer spelling
            xq, zx = self._shifted_codes(x_expr)
            fields["act_scale"] = 1.0
            fields["act_zero_point"] = zx
            weight = facts.constant(w_expr)
            if weight is None or weight.dtype.kind not in "iu":
                raise _NoMatch("weights are not constant integer codes")
            if kind == "dense":
                weight = weight.T
            w_scale, w_zp = np.float32(1.0), np.int64(0)
        else:
            raise _NoMatch("input is not a dequantized quantized tensor")
        rng = facts.code_range(xq)
        if rng is None:
            raise _NoMatch("activation codes are not an integer tensor")
        if rng[1] <= rng[0]:
            raise _NoMatch(f"activation codes are clipped to [{rng[0]}, {rng[1]}]: 0 bits")
        oc = int(weight.shape[0])
        fields.update(
            act_lo=rng[0],
            act_bits=max(1, (rng[1] - rng[0]).bit_length()),
            input_dtype=str(xq.ty.dtype),
            input_shape=x_shape,
            weight=weight.astype(np.int64),
            weight_scale=_per_channel(w_scale, oc, "weight scale", np.float32),
            weight_zero_point=_per_channel(w_zp, oc, "weight zero-point", np.int64),
            bias=np.zeros(oc, np.float32),
        )
        if kind == "conv2d":
            fields.update(self._conv_attrs(call))
        elif len(fields["input_shape"]) != 2:
            raise _NoMatch(f"matmul input has rank {len(fields['input_shape'])} (2 supported)")
        return fields, xq

    def _shifted_codes(self, expr) -> tuple[relax.Expr, int]:
        """``astype(xq, int32) [- zx]`` → (xq, zx)."""
        val = self.facts.value_of(expr)
        zx = 0
        if op_name(val) == "relax.subtract":
            zx = _scalar_int(self.facts.constant(val.args[1]), "activation zero-point")
            val = self.facts.value_of(val.args[0])
        if op_name(val) != "relax.astype":
            raise _NoMatch("integer input is not a cast of integer codes")
        return val.args[0], zx

    def _float_weight(self, w_expr, kind):
        facts = self.facts
        w_val = facts.value_of(w_expr)
        transposed = False
        if kind == "dense" and op_name(w_val) == "relax.permute_dims":
            axes = w_val.attrs.axes
            if axes is not None and [int(a) for a in axes] != [1, 0]:
                raise _NoMatch("weight transpose is not a 2-D transpose")
            transposed = True
            w_val = facts.value_of(w_val.args[0])
        if op_name(w_val) != "relax.dequantize":
            raise _NoMatch("weights are not dequantized integer codes")
        codes = facts.constant(w_val.args[0])
        if codes is None or codes.dtype.kind not in "iu":
            raise _NoMatch("weight codes are not a constant integer tensor")
        scale = facts.constant(w_val.args[1])
        zp = facts.constant(w_val.args[2])
        if scale is None or zp is None:
            raise _NoMatch("weight scale/zero-point are not constants")
        axis = int(w_val.attrs.axis) % codes.ndim
        oc_axis = 0 if kind == "conv2d" or transposed else 1
        if scale.size > 1 and axis != oc_axis:
            raise _NoMatch("weights are quantized per channel along a non-output axis")
        if kind == "dense" and not transposed:
            codes = codes.T
        return codes, scale, zp

    def _conv_attrs(self, call):
        attrs = call.attrs
        if (str(attrs.data_layout), str(attrs.kernel_layout)) != ("NCHW", "OIHW") or \
                str(attrs.out_layout) != "NCHW":
            raise _NoMatch(f"layout {attrs.data_layout}/{attrs.kernel_layout} (NCHW/OIHW only)")
        return dict(strides=tuple(int(s) for s in attrs.strides),
                    pads=tuple(int(p) for p in attrs.padding),
                    dilation=tuple(int(d) for d in attrs.dilation),
                    groups=int(attrs.groups))

    # -- the ops after it --------------------------------------------------------------------

    def _epilogue(self, anchor, fields):
        """Follow single-user ops after the conv/matmul that the fused epilogue can absorb.

        Float spelling: ``[multiply m] [add bias] [relu | clip]* [quantize [clip]]`` (the
        multiply only when the dequantize scales are 1: codes-domain graphs). Integer spelling:
        ``[add B] [astype float32 → multiply m → quantize [clip]]`` (or the int32 accumulator).
        """
        facts = self.facts
        oc = fields["weight"].shape[0]
        integer = str(anchor.ty.dtype) == "int32"
        consumed: list[relax.Var] = []
        cur = anchor
        int_bias = np.zeros(oc, np.int64)
        casted = False  # integer spelling: saw astype(float32)
        mscale = None  # integer spelling: the requantize multiplier
        clamp_lo, clamp_hi = -np.inf, np.inf
        quant = None
        while (nxt := facts.single_user(cur)) is not None:
            val = facts.bindings[nxt]
            name = op_name(val)
            other = [a for a in getattr(val, "args", []) if not a.same_as(cur)]
            const = facts.constant(other[0]) if len(other) == 1 else None
            if name == "relax.add" and not casted and clamp_lo == -np.inf and quant is None:
                if const is None or not _channel_vector(const, oc, fields):
                    break
                b = np.broadcast_to(const.reshape(-1), (oc,))
                if integer:
                    int_bias = int_bias + b.astype(np.int64)
                else:
                    fields["bias"] = fields["bias"] + b.astype(np.float32)
            elif integer and name == "relax.astype" and str(val.attrs.dtype) == "float32" \
                    and not casted:
                casted = True
            elif integer and name == "relax.multiply" and casted and mscale is None:
                if const is None or not _channel_vector(const, oc, fields):
                    break
                mscale = _per_channel(const.reshape(-1), oc, "requantize multiplier",
                                      np.float32)
            elif not integer and name == "relax.multiply" and not consumed \
                    and fields["act_scale"] == 1.0 and np.all(fields["weight_scale"] == 1.0):
                # Codes-domain spelling (torch.export): acc * m, with m the whole scale.
                if const is None or not _channel_vector(const, oc, fields):
                    break
                fields["weight_scale"] = _per_channel(const.reshape(-1), oc, "layer scale",
                                                      np.float32)
            elif not integer and name == "relax.nn.relu" and quant is None:
                clamp_lo = max(clamp_lo, 0.0)
            elif not integer and name == "relax.clip" and quant is None:
                clamp_lo = max(clamp_lo, float(prim_value(val.args[1])))
                clamp_hi = min(clamp_hi, float(prim_value(val.args[2])))
            elif name == "relax.quantize" and quant is None and casted == (mscale is not None):
                quant = self._output_quant(val, oc)
            elif name == "relax.clip" and quant is not None:
                quant["qmin"] = max(quant["qmin"], int(prim_value(val.args[1])))
                quant["qmax"] = min(quant["qmax"], int(prim_value(val.args[2])))
            else:
                break
            consumed.append(nxt)
            cur = nxt
        if integer and quant is None:
            # A cast/multiply that reached no quantize stays in the graph; the layer ends at
            # its int32 accumulator (ConvInteger / MatMulInteger).
            while consumed and op_name(facts.bindings[consumed[-1]]) in ("relax.astype",
                                                                         "relax.multiply"):
                consumed.pop()
        end = consumed[-1] if consumed else anchor
        if integer:
            fields["int_bias"] = int_bias
            if quant is None:
                fields["out_dtype"] = "int32"
            else:
                fields["weight_scale"] = mscale
        if quant is not None:
            fields.update(quant)
        fields["clamp_lo"], fields["clamp_hi"] = clamp_lo, clamp_hi
        return fields, end, consumed

    def _output_quant(self, call, oc):
        scale = self.facts.constant(call.args[1])
        zp = self.facts.constant(call.args[2])
        if scale is None or zp is None:
            raise _NoMatch("output scale/zero-point are not constants")
        dtype = str(call.attrs.out_dtype)
        if "int" not in dtype:
            raise _NoMatch(f"output quantized to {dtype}")
        info = np.iinfo(dtype)
        return dict(out_dtype=dtype,
                    out_scale=_per_channel(scale, oc, "output scale", np.float32),
                    out_zero_point=_per_channel(zp, oc, "output zero-point", np.int32),
                    qmin=int(info.min), qmax=int(info.max))

    def _validate(self, layer: QuantizedLayer):
        if layer.act_bits > MAX_BITS:
            raise _NoMatch(f"activations use {layer.act_bits} bits (1..{MAX_BITS} supported)")
        span = int(layer.weight.max() - layer.weight.min())
        if span.bit_length() > MAX_BITS:
            raise _NoMatch(f"weights span {span + 1} codes (at most 2^{MAX_BITS})")
        if layer.kind == "conv2d" and any(layer.pads):
            zx = layer.act_zero_point
            if not layer.act_lo <= zx < layer.act_lo + (1 << layer.act_bits):
                raise _NoMatch(f"activation zero-point {zx} lies outside the code range, "
                               "so padding has no code")


def _channel_vector(arr: np.ndarray, oc: int, fields) -> bool:
    """True if ``arr`` broadcasts over the layer output along the channel axis only."""
    if arr.size == 1:
        return True
    ndim, axis = (4, 1) if "strides" in fields else (2, 1)
    if arr.ndim > ndim:
        return False
    shape = [1] * (ndim - arr.ndim) + list(arr.shape)
    return shape[axis] == oc and all(s == 1 for i, s in enumerate(shape) if i != axis)


def _macs(call, kind) -> int:
    out = [int(s) for s in call.ty.shape.values]
    w = [int(s) for s in call.args[1].ty.shape.values]
    if kind == "conv2d":
        return int(np.prod(out) * np.prod(w[1:]))
    return int(np.prod(out) * w[0])


def find_layers(func: relax.Function) -> list[LayerMatch]:
    """All conv2d/matmul of ``func``, each matched or with the reason it is not rewritten."""
    facts = FunctionFacts(func)
    matcher = _Matcher(facts)
    found, taken = [], set()
    for var in facts.order:
        if var in taken:
            continue
        m = matcher.match(var)
        if m is None:
            continue
        if m.layer is not None:
            taken.update(m.consumed)
        found.append(m)
    return found


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


# Below this many words the channels-last packing runs on one core (thread start-up dominates).
_PACK_PARALLEL_WORDS = 1 << 16


def _feeds_only(facts: FunctionFacts, var: relax.Var, anchor: relax.Var, hops: int = 3) -> bool:
    """True if ``var``'s only use leads, through single-use bindings, to ``anchor``."""
    user = facts.single_user(var)
    for _ in range(hops):
        if user is None:
            return False
        if user.same_as(anchor):
            return True
        user = facts.single_user(user)
    return False


@mutator
class _CpuRewriter(LayerRewriter):
    def __init__(self, mod, oc_block: int, word_bits: int, integer_min_branches=None,
                 single_branch_oc_block=None):
        super().__init__(mod)
        self.oc_block = oc_block
        self.word_bits = word_bits
        self.integer_min_branches = integer_min_branches
        self.single_branch_oc_block = single_branch_oc_block
        self._plans = {}
        self.channels_last_out: set = set()  # producers that write NHWC codes
        self.packed_in: dict = {}  # consumer anchor -> its producer's match

    def _plan(self, match):
        if match.anchor not in self._plans:
            self._plans[match.anchor] = plan_layer(
                match.layer, self.oc_block, self.word_bits,
                integer_min_branches=self.integer_min_branches,
                single_branch_oc_block=self.single_branch_oc_block)
        return self._plans[match.anchor]

    def link_layers(self, facts):
        """Bit-serial conv → bit-serial conv with nothing in between: the producer writes its
        codes channels-last and one vector pack makes the consumer's bit-planes (instead of
        an NCHW write and a scalar pack inside the consumer)."""
        self.channels_last_out.clear()
        self.packed_in.clear()
        by_end = {m.end: m for m in self.plans.values()}
        for cons in self.plans.values():
            prod = by_end.get(cons.data)
            if prod is None or prod.layer.kind != "conv2d" or prod.layer.out_scale is None:
                continue
            if not chains_channels_last(self._plan(cons)) or \
                    not _feeds_only(facts, prod.end, cons.anchor):
                continue
            self.channels_last_out.add(prod.anchor)
            self.packed_in[cons.anchor] = prod
            logger.info("%s → %s: bit-planes packed channels-last between the layers",
                        prod.name, cons.name)

    def _pack(self, plan, codes: relax.Expr) -> relax.Expr:
        """Emit the channels-last pack of ``codes`` (NHWC) into ``plan``'s bit-planes."""
        layer = plan.layer
        n, c, h, w = layer.input_shape
        shape = packed_input_shape(plan)
        func = pack_channels_last_func(
            (n, h, w, c), layer.input_dtype, layer.act_lo, layer.act_bits, layer.pads,
            plan.pad_code, plan.word_bits,
            parallel=int(np.prod(shape)) >= _PACK_PARALLEL_WORDS)
        gvar = self.builder_.add_func(func, "pack_channels_last")
        return self.builder_.emit(relax.call_tir(
            gvar, [codes], relax.TensorType(shape, f"uint{plan.word_bits}")))

    def rewrite_layer(self, match, data):
        plan = self._plan(match)
        params = [relax.const(arr) for _, arr in plan.epilogue.tensor_params()]
        kind = match.layer.kind
        packed_in = match.anchor in self.packed_in
        if packed_in:
            data = self._pack(plan, data)
        if plan.conv_layout == "integer":
            logger.info("%s (%s): integer kernel for W%dA%d (%d branches would cost more)",
                        match.name, kind, plan.weight_bits, match.layer.act_bits, plan.branches)
        else:
            logger.info("%s (%s): bit-serial W%dA%d, %d branches", match.name, kind,
                        plan.weight_bits, match.layer.act_bits, plan.branches)
        compute = functools.partial(layer_compute, plan, packed_input=packed_in,
                                    channels_last_output=match.anchor in self.channels_last_out)
        return self.builder_.call_te(
            compute,
            data,
            relax.const(plan.packed_weight),
            *params,
            primfunc_name_hint=f"bitserial_{kind}",
            primfunc_attrs={KERNEL_ATTR: kind, "op_pattern": 8,
                            "tvm_qnn.layer": match.name,
                            "tvm_qnn.bits": f"W{plan.weight_bits}A{match.layer.act_bits}"},
        )


@tvm.transform.module_pass(opt_level=0, name="RewriteBitserial")
class RewriteBitserial:
    """Replace quantized conv2d / dense chains by fused multi-branch bit-serial PrimFuncs.

    Parameters
    ----------
    oc_block : int
        Output channels per vector of packed weights (the inner dimension of the weight
        layout): 16 for AVX-512, 8 for AVX2 / NEON. Reduced to a divisor of the channels per
        group when needed.
    word_bits : int
        Bits per packed word: 64 (x86: 64-bit popcount lanes) or 8 (NEON: byte lanes).
    integer_min_branches : int, optional
        Convs with at least this many branches (M·K) get a plain integer kernel instead;
        None (the default here) keeps every layer bit-serial.
    single_branch_oc_block : int, optional
        ``oc_block`` of single-branch (W1A1) layers, when it differs.
    """

    def __init__(self, oc_block: int = 16, word_bits: int = 64,
                 integer_min_branches: int | None = None,
                 single_branch_oc_block: int | None = None):
        self.oc_block = oc_block
        self.word_bits = word_bits
        self.integer_min_branches = integer_min_branches
        self.single_branch_oc_block = single_branch_oc_block

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: D102
        mod = _CpuRewriter(mod, self.oc_block, self.word_bits, self.integer_min_branches,
                           self.single_branch_oc_block).transform()
        return relax.transform.DeadCodeElimination()(mod)
