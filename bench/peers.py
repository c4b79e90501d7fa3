# SPDX-License-Identifier: Apache-2.0
"""The peers the suite measures next to tvm_qnn, one small function each, and how it times.

Layer peers (batch 1, conv3x3 stride 1 pad 1 or dense ``y = x Wᵀ``, no bias):

* :func:`torch_fp32_ms` — PyTorch float (conv ``channels_last``, dense plain).
* :func:`torch_int8_ms` — PyTorch eager static quantization: ``torch.ao.nn.quantized`` Conv2d /
  Linear with quint8 activations and qint8 weights, timed under each quantized engine
  (``onednn``: AMX conv and Linear here; ``x86``: fbgemm Linear; ``fbgemm``); the fastest wins
  and is reported.
* :func:`ort_int8_ms` — onnxruntime on a QDQ model built in memory (:func:`ort_int8_model`):
  ``DequantizeLinear → Conv/MatMul → QuantizeLinear``, which full optimization fuses into
  ``QLinearConv`` / ``QLinearMatMul`` (the fast forms; the fused op is reported). Dense is a
  ``MatMul`` with a ``[in, out]`` weight, not ``Gemm transB=1``, which onnxruntime leaves
  unfused and ~8x slower (BASELINES.md).

The int8 peers compute the same int8 problem (:class:`Int8Layer`: uint8 codes in, int8
weights, uint8 codes out, per-tensor scales), which :func:`int8_reference` computes with
numpy; the tests check both peers against it.

Timing: tvm_qnn's own protocol (:mod:`tvm_qnn.runtime.timing`: warm-up, then the minimum over
rounds of the median of samples), in milliseconds here. Python-called peers include their
call overhead (a few µs), as a user sees it; onnxruntime runs through an ``IOBinding`` to keep
that small. Threads: :func:`pin` restricts every thread of the process to
the first ``threads`` CPUs and sets PyTorch's and TVM's pool sizes. ISA: every peer uses all
of this CPU's, unless ``--mcpu`` limits them (:mod:`bench.peer_isa`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

from tvm_qnn.runtime.timing import QUICK, Timing, measure_seconds, time_call  # noqa: F401 - QUICK: for bench_layers

CPUS = sorted(os.sched_getaffinity(0))
TORCH_ENGINES = ("onednn", "x86", "fbgemm")


# ---------------------------------------------------------------- threads and timing

@contextlib.contextmanager
def thread_control(max_threads: int):
    """Around a run that calls :func:`pin`: :func:`prepare_threads` on entry; on exit every
    thread may use all CPUs again and the environment, PyTorch's and TVM's pools are reset
    (so a test that runs the suite leaves its process as it found it)."""
    saved = {k: os.environ.get(k) for k in ("TVM_NUM_THREADS", "TVM_BIND_THREADS")}
    torch_threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    prepare_threads(max_threads)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "tvm" in sys.modules:
            sys.modules["tvm"].get_global_func("runtime.config_threadpool")(1, 0)
        _set_affinity(CPUS)  # after TVM, which may have bound the main thread
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(torch_threads or len(CPUS))


def prepare_threads(max_threads: int) -> None:
    """Call before TVM starts its thread pool: size it for ``max_threads`` and leave the
    affinity to :func:`pin` (TVM would otherwise bind its workers to cores itself)."""
    os.environ["TVM_NUM_THREADS"] = str(max_threads)
    os.environ["TVM_BIND_THREADS"] = "0"


def pin(threads: int) -> list[int]:
    """Run on the first ``threads`` CPUs: every thread of the process is restricted to them,
    and PyTorch's and TVM's thread pools use ``threads`` threads. Returns the CPUs."""
    if not 1 <= threads <= len(CPUS):
        raise SystemExit(f"--threads {threads}: this process may use {len(CPUS)} CPUs")
    cpus = CPUS[:threads]
    _set_affinity(cpus)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "tvm" in sys.modules:
        config = sys.modules["tvm"].get_global_func("runtime.config_threadpool")
        config(1, threads)  # 1 = kBig: all cores alike; affinity stays ours (TVM_BIND_THREADS=0)
    return cpus


def _set_affinity(cpus) -> None:
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (OSError, ValueError):
            pass  # a thread that just ended


def time_call_ms(fn, timing: Timing) -> float:
    """Milliseconds per call of ``fn`` (:func:`tvm_qnn.runtime.timing.time_call`)."""
    return 1e3 * time_call(fn, timing)


def measure_ms(sample, estimate_s: float, timing: Timing) -> float:
    """Milliseconds per call of ``sample(number, repeat)`` (median seconds), the minimum over
    rounds (:func:`tvm_qnn.runtime.timing.measure_seconds`)."""
    return 1e3 * measure_seconds(sample, estimate_s, timing)


# ---------------------------------------------------------------- the layers

def layer_macs(kind: str, cin: int, cout: int, size: int) -> int:
    """MACs of a suite layer: conv3x3 s1 p1 on ``size``² (batch 1) or dense ``size``×cin→cout."""
    return size * size * cin * cout * 9 if kind == "conv2d" else size * cin * cout


def torch_fp32_ms(kind: str, cin: int, cout: int, size: int, timing: Timing = Timing()) -> float:
    """PyTorch fp32: ``Conv2d`` on channels_last tensors, or ``Linear`` (no bias)."""
    import torch

    with torch.no_grad():
        if kind == "conv2d":
            layer = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False).to(
                memory_format=torch.channels_last)
            x = torch.randn(1, cin, size, size).to(memory_format=torch.channels_last)
        else:
            layer = torch.nn.Linear(cin, cout, bias=False)
            x = torch.randn(size, cin)
        return time_call_ms(lambda: layer(x), timing)


@dataclass(frozen=True)
class Int8Layer:
    """One int8 layer as the int8 peers compute it.

    ``y = clip(round(Σ (x − x_zero_point)·w · x_scale·w_scale / y_scale) + y_zero_point,
    0, 255)`` with uint8 ``x`` (NCHW or [batch, in]) and int8 ``w`` (OIHW or [out, in]).
    """

    kind: str
    x: np.ndarray
    x_scale: float
    x_zero_point: int
    w: np.ndarray
    w_scale: float
    y_scale: float
    y_zero_point: int


def int8_layer(kind: str, cin: int, cout: int, size: int, seed: int = 0) -> Int8Layer:
    """Random codes for the suite layer, with an output scale that spreads the result.

    Activations are 7-bit (0..127) and weights −127..127: no u8·s8 pair sum saturates int16,
    so engines that use ``vpmaddubsw`` (fbgemm without VNNI) compute the exact result too.
    """
    rng = np.random.default_rng(seed)
    xshape = (1, cin, size, size) if kind == "conv2d" else (size, cin)
    wshape = (cout, cin, 3, 3) if kind == "conv2d" else (cout, cin)
    x = rng.integers(0, 128, size=xshape).astype(np.uint8)
    w = rng.integers(-127, 128, size=wshape).astype(np.int8)
    x_scale, w_scale, x_zero_point = 2.0 ** -6, 2.0 ** -7, 0
    # Std of the int32 accumulator for uniform codes; ±4 sigma spans the uint8 range.
    reduction = cin * 9 if kind == "conv2d" else cin
    sigma = math.sqrt(reduction) * (128 / math.sqrt(12)) * (255 / math.sqrt(12))
    y_scale = float(np.float32(x_scale * w_scale * 8 * sigma / 255))
    return Int8Layer(kind, x, x_scale, x_zero_point, w, w_scale, y_scale, 128)


def int8_reference(layer: Int8Layer) -> np.ndarray:
    """The uint8 output of ``layer`` computed with numpy (int64 accumulation)."""
    x = layer.x.astype(np.int64) - layer.x_zero_point
    w = layer.w.astype(np.int64)
    if layer.kind == "conv2d":
        n, c, h, wd = x.shape
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        cols = np.stack([xp[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(3)],
                        axis=2)  # n, c, 9, h, w
        acc = np.einsum("nckhw,ock->nohw", cols, w.reshape(w.shape[0], c, 9))
    else:
        acc = x @ w.T
    y = np.rint(acc * (layer.x_scale * layer.w_scale / layer.y_scale)) + layer.y_zero_point
    return np.clip(y, 0, 255).astype(np.uint8)


def torch_int8_module(layer: Int8Layer, engine: str):
    """``(module, quantized input)`` of the layer for PyTorch's quantized ``engine``."""
    import torch
    from torch.ao.nn import quantized as nnq

    torch.backends.quantized.engine = engine  # weights are prepacked for the engine set now
    with warnings.catch_warnings():  # "quantized tensor creation functions are deprecated"
        warnings.simplefilter("ignore", UserWarning)
        wq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(layer.w.copy()),
                                                     layer.w_scale, 0)
        xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(layer.x.copy()),
                                                     layer.x_scale, layer.x_zero_point)
    cout, cin = layer.w.shape[:2]
    if layer.kind == "conv2d":
        module = nnq.Conv2d(cin, cout, 3, padding=1, bias=False)
    else:
        module = nnq.Linear(cin, cout, bias_=False)
    module.set_weight_bias(wq, None)
    module.scale, module.zero_point = layer.y_scale, layer.y_zero_point
    if layer.kind == "conv2d":
        xq = xq.contiguous(memory_format=torch.channels_last)
    return module, xq


def torch_int8_run(layer: Int8Layer, engine: str) -> np.ndarray:
    """The layer's uint8 output computed by PyTorch's ``engine``."""
    import torch

    module, xq = torch_int8_module(layer, engine)
    with torch.no_grad():
        return module(xq).int_repr().contiguous().numpy()


def torch_int8_ms(layer: Int8Layer, timing: Timing = Timing(),
                  engines=TORCH_ENGINES) -> tuple[float, str, dict]:
    """PyTorch int8 under each engine: ``(best ms, its engine, {engine: ms})``."""
    import torch

    times = {}
    for engine in engines:
        if engine not in torch.backends.quantized.supported_engines:
            continue
        module, xq = torch_int8_module(layer, engine)
        with torch.no_grad():
            times[engine] = time_call_ms(lambda m=module, x=xq: m(x), timing)
    best = min(times, key=times.get)
    return times[best], best, times


def ort_int8_model(layer: Int8Layer):
    """The layer as a QDQ ONNX model (input ``x`` uint8, output ``y`` uint8)."""
    from onnx import TensorProto, helper, numpy_helper

    def scalar(name, value, dtype):
        return numpy_helper.from_array(np.array(value, dtype=dtype), name)

    if layer.kind == "conv2d":
        w = layer.w
        op = helper.make_node("Conv", ["xf", "wf"], ["yf"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1])
        n, cout, h, wd = layer.x.shape[0], w.shape[0], *layer.x.shape[2:]
        yshape = [n, cout, h, wd]
    else:
        w = np.ascontiguousarray(layer.w.T)  # [in, out]: MatMul, fused into QLinearMatMul
        op = helper.make_node("MatMul", ["xf", "wf"], ["yf"])
        yshape = [layer.x.shape[0], w.shape[1]]
    inits = [scalar("x_scale", layer.x_scale, np.float32),
             scalar("x_zp", layer.x_zero_point, np.uint8),
             numpy_helper.from_array(w, "w"), scalar("w_scale", layer.w_scale, np.float32),
             scalar("w_zp", 0, np.int8), scalar("y_scale", layer.y_scale, np.float32),
             scalar("y_zp", layer.y_zero_point, np.uint8)]
    nodes = [helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zp"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["wf"]), op,
             helper.make_node("QuantizeLinear", ["yf", "y_scale", "y_zp"], ["y"])]
    graph = helper.make_graph(
        nodes, f"int8_{layer.kind}",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, list(layer.x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, yshape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def ort_session(model, threads: int, optimized: bool = True):
    """An onnxruntime CPU session of ``model`` (ModelProto or path), ``threads`` intra-op
    threads, full graph optimizations (or none). Also returns the op types it runs."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # not the warning about saving a hardware-specific model
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else
                                   ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    with tempfile.TemporaryDirectory(prefix="tvm_qnn_bench_") as tmp:
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        data = model if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    return sess, ops


def ort_int8_run(layer: Int8Layer, optimized: bool = True) -> np.ndarray:
    """The layer's uint8 output computed by onnxruntime."""
    sess, _ = ort_session(ort_int8_model(layer), 1, optimized)
    return sess.run(None, {"x": layer.x})[0]


def ort_time_ms(sess, feeds: dict, timing: Timing = Timing()) -> float:
    """Time ``sess`` on ``feeds`` through an IOBinding (inputs and outputs bound once)."""
    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for out in sess.get_outputs():
        binding.bind_output(out.name)
    sess.run_with_iobinding(binding)
    return time_call_ms(lambda: sess.run_with_iobinding(binding), timing)


def ort_int8_ms(layer: Int8Layer, threads: int, timing: Timing = Timing()) -> tuple[float, str]:
    """onnxruntime int8: ``(ms, the compute op it runs, e.g. QLinearConv)``."""
    sess, ops = ort_session(ort_int8_model(layer), threads)
    compute = [op for op in ops if op not in ("QuantizeLinear", "DequantizeLinear")]
    return ort_time_ms(sess, {"x": layer.x}, timing), "+".join(compute) or "?"


# ---------------------------------------------------------------- end-to-end models

def torch_cnv_fp32(onnx_path: str):
    """The float CNV of ``onnx_path`` (``CNV_FP32.onnx``) as a PyTorch module, its weights
    loaded from the ONNX initializers (``_<i>_w`` is layer ``i − 1`` of ``nn.models.cnv``:
    ONNX layer 0 is the input scaling ``x·scale + shift``)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from tvm_qnn.nn.models import cnv

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(onnx_path).graph.initializer}
    body = cnv()
    state = {}
    for name, value in inits.items():
        if name in ("_0_scale", "_0_shift"):
            continue
        index, _, field = name[1:].partition("_")
        field = {"w": "weight", "b": "bias"}.get(field, field)
        state[f"{int(index) - 1}.{field}"] = torch.from_numpy(np.array(value))
    body.load_state_dict(state, strict=False)
    scale, shift = (float(inits["_0_scale"]), float(inits["_0_shift"]))

    class Cnv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x * scale + shift)

    return Cnv().eval().to(memory_format=torch.channels_last)


def torch_module_ms(module, x, timing: Timing = Timing()) -> float:
    """PyTorch inference time of ``module(x)`` (no grad)."""
    import torch

    with torch.no_grad():
        return time_call_ms(lambda: module(x), timing)
