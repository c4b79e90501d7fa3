# SPDX-License-Identifier: Apache-2.0
"""Run an ONNX model: random feeds, the ONNX reference evaluator, onnxruntime.

Re-exported by :mod:`tvm_qnn.testing.onnx_models`, which is where callers import them from.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper


def random_input(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for every graph input of ``model``.

    Parameters
    ----------
    model : onnx.ModelProto
        The model; inputs that are also initializers get no feed.
    seed : int
        Seed of the numpy generator; the same seed gives the same feeds.

    Returns
    -------
    dict of str to numpy.ndarray
        N(0, 1) samples for float inputs, uniform codes over the whole dtype for integer inputs.
    """
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.normal(size=shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            feeds[inp.name] = rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
    return feeds


def run_reference(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """Run ``model`` with ``onnx.reference.ReferenceEvaluator`` (the ONNX spec in numpy).

    Parameters
    ----------
    model : onnx.ModelProto
        The model to run.
    feeds : dict of str to numpy.ndarray
        One array per graph input, e.g. from :func:`random_input`.

    Returns
    -------
    list of numpy.ndarray
        The graph outputs, in order.
    """
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]


def run_onnxruntime(model: onnx.ModelProto, feeds: dict, optimized: bool = False
                    ) -> list[np.ndarray]:
    """Run ``model`` with onnxruntime on the CPU.

    Parameters
    ----------
    model : onnx.ModelProto
        The model to run.
    feeds : dict of str to numpy.ndarray
        One array per graph input, e.g. from :func:`random_input`.
    optimized : bool
        Keep onnxruntime's graph optimizations. Off by default: its fused QLinear kernels round
        some ties differently from the ONNX spec, and the tests compare bit for bit.

    Returns
    -------
    list of numpy.ndarray
        The graph outputs, in order.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)
