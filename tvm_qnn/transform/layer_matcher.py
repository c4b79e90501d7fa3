# SPDX-License-Identifier: Apache-2.0
"""Finding quantized layers in a Relax function: which conv2d / matmul chains a lowering can
replace, with the numbers of each (:class:`~tvm_qnn.topi.layer.QuantizedLayer`), or why not.

Two spellings of a quantized layer are matched (the frontend emits both):

* float (QDQ / QCDQ / int4)::

      y = quantize(act(conv2d|matmul(dequantize(xq, sx, zx), dequantize(Wq, sw, zw)) + bias),
                   sy, zy) [→ clip]

  where the trailing ``add`` / ReLU / Clip / quantize are optional (no quantize: float output);
* integer (QLinearConv / QLinearMatMul / ConvInteger / MatMulInteger)::

      acc = conv2d|matmul(astype(xq, i32) - zx, Wq - zw) [+ B]
      y   = quantize(float(acc) * m, 1, zy) [→ clip]            # or acc itself (int32)

Every op of the chain but the first must have a single user.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np
from tvm import relax

from ..topi.layer import MAX_BITS, QuantizedLayer
from ..topi.requantize import Requantize
from .concat_quantized_codes import concat_refusal
from .graph_facts import FunctionFacts, op_name, prim_value
from .layer_tail import (
    NoMatch,
    fold_batch_norm,
    output_quant,
    per_channel,
    scalar_int,
    sign_codes,
)

__all__ = ["LayerMatch", "find_layers"]


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
            output = Requantize(**{f.name: fields.pop(f.name)
                                   for f in dataclasses.fields(Requantize) if f.name in fields})
            layer = QuantizedLayer(kind=kind, name=anchor.name, output=output, **fields)
            self._validate(layer)
        except NoMatch as err:
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
            weight, w_scale, w_zp = self._float_weight(w_expr, kind)
            sx, zx = (facts.constant(a) for a in x_val.args[1:3])
            if sx is not None and sx.size > 1:  # per channel: folded into the layer's scale
                w_scale = per_channel(w_scale, weight.shape[0], "weight scale", np.float32) \
                    * self._group_scale(sx, x_val, call, kind, weight.shape[0])
                sx = np.float32(1.0)
            if zx is not None and zx.size > 1 and np.all(zx == zx.flat[0]):
                zx = zx.flat[:1]
            if sx is None:
                raise NoMatch("activation scale must be a constant")
            fields["act_scale"] = float(np.float32(sx.reshape(())))
            fields["act_zero_point"] = scalar_int(zx, "activation zero-point")
        elif str(call.ty.dtype) == "int32":  # integer spelling
            xq, zx = self._shifted_codes(x_expr)
            fields["act_scale"] = 1.0
            fields["act_zero_point"] = zx
            weight = facts.constant(w_expr)
            if weight is None or weight.dtype.kind not in "iu":
                raise NoMatch("weights are not constant integer codes")
            if kind == "dense":
                weight = weight.T
            w_scale, w_zp = np.float32(1.0), np.int64(0)
        elif op_name(x_val) == "relax.concat":  # one ConcatQuantizedCodes did not rewrite
            why = concat_refusal(x_val, facts.value_of) or "left as it is"
            raise NoMatch(f"input is a Concat {why}")
        else:
            raise NoMatch("input is not a dequantized quantized tensor")
        rng = facts.code_range(xq)
        if rng is None:
            raise NoMatch("activation codes are not an integer tensor")
        if rng[1] <= rng[0]:
            raise NoMatch(f"activation codes are clipped to [{rng[0]}, {rng[1]}]: 0 bits")
        oc = int(weight.shape[0])
        fields.update(
            act_lo=rng[0],
            act_bits=max(1, (rng[1] - rng[0]).bit_length()),
            input_dtype=str(xq.ty.dtype),
            input_shape=x_shape,
            weight=weight.astype(np.int64),
            weight_scale=per_channel(w_scale, oc, "weight scale", np.float32),
            weight_zero_point=per_channel(w_zp, oc, "weight zero-point", np.int64),
            bias=np.zeros(oc, np.float32),
        )
        if kind == "conv2d":
            fields.update(self._conv_attrs(call))
        step = self._act_step(xq, rng, fields)
        if step > 1:
            fields.update(act_step=step,
                          act_bits=max(1, ((rng[1] - rng[0]) // step).bit_length()))
        if kind == "dense" and len(fields["input_shape"]) != 2:
            raise NoMatch(f"matmul input has rank {len(fields['input_shape'])} (2 supported)")
        return fields, xq

    def _group_scale(self, sx, x_val, call, kind, oc) -> np.ndarray:
        """A per-channel activation scale as a factor per output channel: possible when it is
        constant over the input channels each output reads (a depthwise or grouped conv whose
        groups share one scale), so it multiplies the layer's scale instead of the codes."""
        groups = int(call.attrs.groups) if kind == "conv2d" else 1
        channels = int(x_val.ty.shape[1]) if len(x_val.ty.shape) > 1 else 0
        if kind != "conv2d" or int(x_val.attrs.axis) % len(x_val.ty.shape) != 1 \
                or sx.size != channels:
            raise NoMatch("activation scale varies along the reduction (per-tensor, or per "
                          "channel for a depthwise/grouped conv)")
        per_group = sx.reshape(groups, channels // groups)
        if np.any(per_group != per_group[:, :1]):
            raise NoMatch("activation scale varies within a conv group")
        return np.repeat(per_group[:, 0].astype(np.float32), oc // groups)

    def _act_step(self, xq, rng, fields) -> int:
        """The step between the activation codes, when the bit-planes can use it: a power of
        two dividing the range, and a padded conv's zero (its padding) one of the codes."""
        step = self.facts.code_step(xq)
        zx = fields["act_zero_point"] - rng[0]
        if step & (step - 1) or (rng[1] - rng[0]) % step \
                or (any(fields.get("pads", ())) and zx % step):
            return 1
        return step

    def _shifted_codes(self, expr) -> tuple[relax.Expr, int]:
        """``astype(xq, int32) [- zx]`` → (xq, zx)."""
        val = self.facts.value_of(expr)
        zx = 0
        if op_name(val) == "relax.subtract":
            zx = scalar_int(self.facts.constant(val.args[1]), "activation zero-point")
            val = self.facts.value_of(val.args[0])
        if op_name(val) != "relax.astype":
            raise NoMatch("integer input is not a cast of integer codes")
        return val.args[0], zx

    def _float_weight(self, w_expr, kind):
        facts = self.facts
        w_val = facts.value_of(w_expr)
        transposed = False
        if kind == "dense" and op_name(w_val) == "relax.permute_dims":
            axes = w_val.attrs.axes
            if axes is not None and [int(a) for a in axes] != [1, 0]:
                raise NoMatch("weight transpose is not a 2-D transpose")
            transposed = True
            w_val = facts.value_of(w_val.args[0])
        if op_name(w_val) != "relax.dequantize":
            raise NoMatch("weights are not dequantized integer codes")
        codes = facts.constant(w_val.args[0])
        if codes is None or codes.dtype.kind not in "iu":
            raise NoMatch("weight codes are not a constant integer tensor")
        scale = facts.constant(w_val.args[1])
        zp = facts.constant(w_val.args[2])
        if scale is None or zp is None:
            raise NoMatch("weight scale/zero-point are not constants")
        axis = int(w_val.attrs.axis) % codes.ndim
        oc_axis = 0 if kind == "conv2d" or transposed else 1
        if scale.size > 1 and axis != oc_axis:
            raise NoMatch("weights are quantized per channel along a non-output axis")
        if kind == "dense" and not transposed:
            codes = codes.T
        return codes, scale, zp

    def _conv_attrs(self, call):
        attrs = call.attrs
        if (str(attrs.data_layout), str(attrs.kernel_layout)) != ("NCHW", "OIHW") or \
                str(attrs.out_layout) != "NCHW":
            raise NoMatch(f"layout {attrs.data_layout}/{attrs.kernel_layout} (NCHW/OIHW only)")
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
                mscale = per_channel(const.reshape(-1), oc, "requantize multiplier",
                                      np.float32)
            elif not integer and name == "relax.multiply" and not consumed \
                    and fields["act_scale"] == 1.0 and np.all(fields["weight_scale"] == 1.0):
                # Codes-domain spelling (torch.export): acc * m, with m the whole scale.
                if const is None or not _channel_vector(const, oc, fields):
                    break
                fields["weight_scale"] = per_channel(const.reshape(-1), oc, "layer scale",
                                                      np.float32)
            elif not integer and name == "relax.nn.batch_norm" and quant is None \
                    and clamp_lo == -np.inf \
                    and (item := fold_batch_norm(facts, nxt, fields)) is not None:
                consumed.append(nxt)  # and below its TupleGetItem: the normalized tensor
                nxt = item
            elif not integer and name == "relax.greater_equal" and quant is None \
                    and const is not None and const.size == 1 and float(const) == 0 \
                    and (sign := sign_codes(facts, nxt, oc)) is not None:
                quant, where = sign
                consumed.append(nxt)
                nxt = where
            elif not integer and name == "relax.nn.relu" and quant is None:
                clamp_lo = max(clamp_lo, 0.0)
            elif not integer and name == "relax.clip" and quant is None:
                clamp_lo = max(clamp_lo, float(prim_value(val.args[1])))
                clamp_hi = min(clamp_hi, float(prim_value(val.args[2])))
            elif name == "relax.quantize" and quant is None and casted == (mscale is not None):
                quant = output_quant(facts, val, oc)
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

    def _validate(self, layer: QuantizedLayer):
        if layer.act_bits > MAX_BITS:
            raise NoMatch(f"activations use {layer.act_bits} bits (1..{MAX_BITS} supported)")
        span = int(layer.weight.max() - layer.weight.min())
        if span.bit_length() > MAX_BITS:
            raise NoMatch(f"weights span {span + 1} codes (at most 2^{MAX_BITS})")
        if layer.kind == "conv2d" and any(layer.pads):
            zx, top = layer.act_zero_point, layer.act_step * ((1 << layer.act_bits) - 1)
            if not layer.act_lo <= zx <= layer.act_lo + top:
                raise NoMatch(f"activation zero-point {zx} lies outside the code range, "
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


