# SPDX-License-Identifier: Apache-2.0
"""
Compile a quantized ONNX model into bit-serial code
===================================================

This tutorial takes a quantized ONNX model, looks at how tvm_qnn sees it, compiles it for this
x86 CPU, checks the result against onnxruntime bit for bit, and times it.

The method: an M-bit activation code is a sum of M {-1, +1} bit-planes scaled by 2^i, and so is
a K-bit weight; a quantized conv2d or dense layer then becomes M·K binary branches, each an
``xor`` + ``popcount`` over packed bit-planes, recombined with the scales 2^(i+j) (Sun et al.,
arXiv 2106.09886). tvm_qnn adds the exact correction terms for zero-points and padding, so the
result equals the integer computation of the quantized model exactly.

Run it with ``python tutorials/01_compile_quantized_onnx.py``; under ``CI=true`` it uses
fewer inputs and timing rounds.
"""

import os

import numpy as np

import tvm_qnn
from tvm_qnn.testing.onnx_models import make_cnn_model, random_input, run_onnxruntime

CI = os.environ.get("CI") == "true"

# %%
# 1. A quantized model
# --------------------
# ``make_cnn_model`` builds a small CNN in the QCDQ form Brevitas exports: every quantized
# tensor is ``QuantizeLinear → Clip → DequantizeLinear``, and the Clip bounds say how many bits
# the codes use. Its weights are random. Any QDQ, QCDQ, int4 QDQ or QOperator model from a file
# works the same way: ``tvm_qnn.compile("model.onnx")``.
model = make_cnn_model("qcdq", bits=2)

# %%
# 2. What the compiler will do with it
# ------------------------------------
# ``summary`` lists each conv2d/dense: the bit widths it found (weights: from the values the
# codes actually take), the MACs at that precision, the binary operations (MACs × M × K) and
# the size of the packed weights. Layers that cannot go bit-serial say why.
print(tvm_qnn.summary(model))

# %%
# 3. Compile and run
# ------------------
# ``target="x86"`` means this host: 512-bit ``vpopcntq`` when the CPU has AVX-512 VPOPCNTDQ,
# AVX2 otherwise. ``run`` takes and returns numpy arrays.
art = tvm_qnn.compile(model, target="x86")
print(art)

inputs = 4 if CI else 32
exact = 0
for seed in range(inputs):
    feeds = random_input(model, seed=seed)
    ours = art.run(feeds[art.inputs[0].name])
    # onnxruntime with graph optimizations off follows the ONNX spec op by op (its fused
    # QLinear kernels round some ties differently).
    theirs = run_onnxruntime(model, feeds)[0]
    exact += int(np.array_equal(ours, theirs))
print(f"bit-exact with onnxruntime on {exact}/{inputs} inputs")
assert exact == inputs

# %%
# 4. Time it, export it
# ---------------------
# ``benchmark`` is TVM's ``time_evaluator``: the median over several rounds, without Python
# overhead. ``export_library`` writes a shared library that ``tvm_qnn.load`` reads back.
seconds = art.benchmark(feeds[art.inputs[0].name], number=5 if CI else 50, repeat=3)
print(f"latency: {seconds * 1e3:.3f} ms per image")

path = "/tmp/tvm_qnn_tutorial_cnn.so"
art.export_library(path)
again = tvm_qnn.load(path)
assert np.array_equal(again.run(feeds[art.inputs[0].name]), ours)
print(f"exported to {path} and reloaded: same output")
