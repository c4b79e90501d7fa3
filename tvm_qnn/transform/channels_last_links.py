# SPDX-License-Identifier: Apache-2.0
"""Which quantized tensors between layers travel channels-last (NHWC) instead of NCHW.

A conv's kernel computes its outputs channels-innermost, and a consumer that packs bit-planes
(or stages channels-innermost int8 rows) wants them so: passing the codes NHWC saves the
producer a scatter across planes and the consumer a gather. The codes may pass through the ops
Brevitas puts between layers (a max pooling, a concatenation of codes that share one
quantizer, as :mod:`.concat_quantized_codes` leaves them), and may feed several consumers::

    a = conv(x)  b = conv(x)          a, b written NHWC
    c = concat(a, b, axis=1)          →  concat(a, b, axis=3)
    p = max_pool2d(c)                 →  max_pool2d(c, layout="NHWC")
    y = conv(dequantize(p)) ; z = conv(dequantize(c))    both read NHWC codes

ResNet's residual blocks add two dequantized code tensors and requantize the sum; such
elementwise ops, with per-tensor (scalar) parameters, run on NHWC tensors as they are, so the
codes stay NHWC through them too. A dense layer's rows are channels-last already: a dense
layer the caller lets read them so takes the rows of the dense layer before it, or the
flattened 1x1 images of a conv, through the same pack.

A tensor goes NHWC only when it can be computed so (a conv's codes, or a pooling, concat or
elementwise op of such tensors) and every use of it can take it so (a consumer that reads NHWC
codes, reached through nothing but its own input dequantize and the like, or an op that goes
NHWC too); anything else that reads it (a float op, the function's result) keeps the whole
tensor NCHW. The bindings between a tensor and its consumers (their dequantize) are dead once
the consumers read the codes, and are dropped: a per-channel dequantize would not even fit
NHWC codes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from .graph_facts import FunctionFacts, op_name
from .layer_matcher import LayerMatch

__all__ = ["ChannelsLastLinks", "link_channels_last"]

# How many bindings (a dequantize, a cast) may sit between a tensor and the consumer reading it.
_MAX_HOPS = 3


@dataclass
class ChannelsLastLinks:
    """What :func:`link_channels_last` decided for one function."""

    producers: set = field(default_factory=set)  # anchors of layers that write NHWC codes
    consumers: set = field(default_factory=set)  # anchors of layers that read NHWC codes
    between: dict = field(default_factory=dict)  # pool / concat / elementwise var → its op
    skip: set = field(default_factory=set)  # consumers' input bindings, dead once linked


# Elementwise ops that compute the same on NHWC tensors, given scalar parameters.
_ELEMENTWISE = frozenset(f"relax.{op}" for op in (
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "nn.relu", "clip", "astype",
    "round", "floor", "dequantize", "quantize"))


def _scalar(arg) -> bool:
    """Whether ``arg`` (not a variable) is a one-element constant or a non-tensor argument."""
    if isinstance(arg, tvm.ir.expr.GenericConst):
        return int(np.prod(arg.value.shape)) == 1
    return not isinstance(arg, (relax.Tuple, relax.Call))


def _elementwise_inputs(value) -> list | None:
    """The 4-D tensors an elementwise op of ``_ELEMENTWISE`` reads when all of them have its
    output's shape and its other arguments are scalars, else None."""
    shape = [int(d) for d in value.ty.shape] if len(getattr(value.ty, "shape", [])) == 4 \
        else None
    tensors = [a for a in value.args if isinstance(a, relax.Var)]
    if shape is None or not tensors or not all(_scalar(a) for a in value.args
                                               if not isinstance(a, relax.Var)):
        return None
    if any([int(d) for d in t.ty.shape] != shape for t in tensors):
        return None  # a broadcast operand (a per-channel variable)
    return tensors


def _between_inputs(value) -> list | None:
    """The tensors an NCHW max pooling, a channel concat of 4-D tensors, an elementwise op
    of 4-D tensors with scalar parameters or a flatten of 1x1 images reads, else None."""
    name = op_name(value)
    if name in _ELEMENTWISE:
        return _elementwise_inputs(value)
    if name == "relax.reshape":  # a flatten of 1x1 images: NHWC and NCHW rows are the same
        shape = [int(d) for d in value.args[0].ty.shape]
        return [value.args[0]] if len(shape) == 4 and shape[2:] == [1, 1] \
            and [int(d) for d in value.ty.shape] == shape[:2] else None
    if name == "relax.nn.max_pool2d":
        nchw = str(value.attrs.layout) == str(value.attrs.out_layout) == "NCHW"
        return [value.args[0]] if nchw else None
    if name == "relax.concat" and isinstance(value.args[0], relax.Tuple) \
            and len(value.ty.shape) == 4 and int(value.attrs.axis) % 4 == 1:
        return list(value.args[0].fields)
    return None


def _reaches_only(facts: FunctionFacts, var, ends: set, layers: set) -> set | None:
    """The bindings between ``var`` and its users when every path from it ends, within
    ``_MAX_HOPS``, at one of the anchors ``ends`` (a dead end counts too) without passing
    through ``layers`` (other layers' bindings) or the function's result; else None."""
    path, frontier = set(), [var]
    for _ in range(_MAX_HOPS + 1):
        nxt = []
        for v in frontier:
            for user in facts.users.get(v, []):
                if user in ends:
                    continue
                if user in layers or user in facts.returned:
                    return None
                path.add(user)
                nxt.append(user)
        if not nxt:
            return path
        frontier = nxt
    return None


def link_channels_last(facts: FunctionFacts, plans: Mapping[relax.Var, LayerMatch],
                       reads_nhwc: Callable[[LayerMatch], bool]) -> ChannelsLastLinks:
    """Decide which tensors between the layers ``plans`` (anchor → match) go NHWC (see the
    module docstring). ``reads_nhwc``: whether a matched layer can read NHWC codes (or a
    dense layer, its rows as they are, through a pack into bit-planes)."""
    producers = {m.end: m for m in plans.values() if m.layer.output.quantized}
    readers: dict = {}
    for m in plans.values():
        if reads_nhwc(m) and m.data is not None \
                and tuple(int(s) for s in m.data.ty.shape.values) == m.layer.input_shape:
            readers.setdefault(m.data, set()).add(m.anchor)
    layers = set(plans) | {v for m in plans.values() for v in m.consumed}
    inputs: dict = {}  # candidate tensor → the tensors it is computed from ([] for a conv's)
    for var in facts.order:
        if var in producers and var not in facts.returned:
            inputs[var] = []
            continue
        ins = _between_inputs(facts.bindings[var])
        if ins and all(v in inputs for v in ins):
            inputs[var] = ins
    paths: dict = {}
    changed = True
    while changed:  # drop candidates until every one's inputs and uses stay NHWC
        changed = False
        # A reader takes its codes themselves: its float input (a dequantize that may go
        # NHWC for another user too) is not what it reads.
        reading = {a for data, anchors in readers.items() if data in inputs for a in anchors}
        for var in list(inputs):
            ends = reading | {u for u in facts.users.get(var, [])
                              if u in inputs and var in inputs[u]}
            path = _reaches_only(facts, var, ends, layers)
            if path is None or any(v not in inputs for v in inputs[var]):
                del inputs[var]
                changed = True
            else:
                paths[var] = path
    links = ChannelsLastLinks()
    for var in inputs:
        if var in producers:
            links.producers.add(producers[var].anchor)
        else:
            links.between[var] = facts.bindings[var]
        links.consumers |= readers.get(var, set())  # (not every candidate holds codes)
        links.skip |= paths[var]
    return links
