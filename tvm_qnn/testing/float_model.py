# SPDX-License-Identifier: Apache-2.0
"""The float twin of a QDQ/QCDQ model: what the quantized model approximates.

Constant ``DequantizeLinear`` nodes (weights, biases) become float initializers, and the
``QuantizeLinear → [Clip] → DequantizeLinear`` chains on activations are removed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _dequantize(codes, scale, zero_point, axis):
    shape = [1] * codes.ndim
    if scale.size > 1:
        shape[axis % codes.ndim] = -1
    zp = np.zeros(1, np.int64) if zero_point is None else zero_point.astype(np.int64)
    return ((codes.astype(np.int64) - zp.reshape(shape if zp.size > 1 else [1] * codes.ndim))
            .astype(np.float32) * scale.astype(np.float32).reshape(
                shape if scale.size > 1 else [1] * codes.ndim))


def float_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return the float model a QDQ/QCDQ ``model`` quantizes (new model, input unchanged)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    rename: dict[str, str] = {}
    keep, new_inits = [], []
    def constant_codes(name):
        """Integer codes of a constant weight: an initializer, possibly through a Clip."""
        if name in inits:
            return inits[name]
        clip = producer.get(name)
        if clip is not None and clip.op_type == "Clip" and clip.input[0] in inits:
            return np.clip(inits[clip.input[0]], inits[clip.input[1]], inits[clip.input[2]])
        return None

    for node in graph.node:
        codes = constant_codes(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if codes is not None:
            zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            value = _dequantize(codes, inits[node.input[1]], zp, _attr(node, "axis", 1))
            new_inits.append(numpy_helper.from_array(value, node.output[0]))
            continue
        if node.op_type == "DequantizeLinear":
            src = producer.get(node.input[0])
            if src is not None and src.op_type == "Clip":
                src = producer.get(src.input[0])
            if src is not None and src.op_type == "QuantizeLinear":
                rename[node.output[0]] = src.input[0]
                continue
        keep.append(node)
    outputs = {o.name for o in graph.output}
    used = set()
    for node in keep:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name
            used.add(name)
    for out in graph.output:
        name = out.name
        while name in rename:
            name = rename[name]
        if name != out.name:  # keep the output name: an Identity from the float value
            keep.append(onnx.helper.make_node("Identity", [name], [out.name]))
            used.add(name)
    # Drop the Q/Clip nodes whose outputs nobody reads any more.
    while True:
        produced_used = [n for n in keep if any(o in used or o in outputs for o in n.output)]
        if len(produced_used) == len(keep):
            break
        keep = produced_used
        used = {i for n in keep for i in n.input}
    del graph.node[:]
    graph.node.extend(keep)
    kept_inits = [i for i in graph.initializer if i.name in used] + \
        [i for i in new_inits if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    onnx.checker.check_model(model)
    return model
