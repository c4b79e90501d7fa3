# SPDX-License-Identifier: Apache-2.0
"""
Bring a Brevitas model
======================

Most low-bit networks are trained with Brevitas (quantization-aware training in PyTorch) and
leave it as QONNX. This tutorial trains a small binary/2-bit network with ``brevitas.nn`` on
Fashion-MNIST, exports it with Brevitas' own ``export_qonnx``, and compiles that file for the
three targets: x86, an ARM board (run on an emulated aarch64 device here) and the bit-serial
accelerator (its simulator). Every run is checked bit for bit against qonnx's reference
execution of the same file, then the per-layer report and the speed are printed.

Run it with ``python tutorials/06_brevitas.py`` (``CI=true``: a few training steps only).
"""

import os
import tempfile
import time

import numpy as np
import onnx
import torch
from brevitas.export import export_qonnx
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup

import tvm_qnn
from tvm_qnn.data import load_fashion_mnist
from tvm_qnn.testing.brevitas_models import float_model

CI = os.environ.get("CI") == "true"
torch.manual_seed(0)

# %%
# 1. A Brevitas network
# ---------------------
# FINN's quantizers from Brevitas' examples: ``bit_width=1`` is a binary {-1, +1} quantizer
# (exported as ``BipolarQuant``), 2 bits a signed uniform one (``Quant``). The first layer
# reads a 2-bit image, the convs have binary weights and 2-bit activations, with the usual
# BatchNorm and MaxPool between them; the classifier is binary × binary.


def act(bits):
    return QuantIdentity(act_quant=CommonActQuant, bit_width=bits)


def conv(cin, cout):
    return QuantConv2d(cin, cout, 3, bias=False, weight_bit_width=1,
                       weight_quant=CommonWeightQuant)


net = torch.nn.Sequential(
    act(2), conv(1, 32), torch.nn.BatchNorm2d(32), act(2),
    conv(32, 32), torch.nn.BatchNorm2d(32), act(2), torch.nn.MaxPool2d(2),
    conv(32, 64), torch.nn.BatchNorm2d(64), act(1), torch.nn.MaxPool2d(2),
    torch.nn.Flatten(),
    QuantLinear(64 * 5 * 5, 10, bias=False, weight_bit_width=1,
                weight_quant=CommonWeightQuant))

# %%
# 2. Train it (briefly)
# ---------------------
# Quantization-aware training: Brevitas quantizes in the forward pass and passes gradients
# straight through. Inputs are mapped to [-1, 1], the range of the first quantizer.
images, labels = load_fashion_mnist("train")
x_train = torch.from_numpy(images * 2 - 1)  # N x 1 x 28 x 28 in [-1, 1]
y_train = torch.from_numpy(labels.astype(np.int64))
steps = 20 if CI else 600
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
net.train()
for _ in range(steps):
    idx = torch.randint(0, len(x_train), (64,))
    loss = torch.nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
net.eval()
test_images, test_labels = load_fashion_mnist("test")
x_test = (test_images * 2 - 1).astype(np.float32)
with torch.no_grad():
    acc = (net(torch.from_numpy(x_test[:1000])).argmax(1).numpy() == test_labels[:1000]).mean()
print(f"trained {steps} steps, loss {loss.item():.3f}, PyTorch accuracy {acc:.3f} "
      "(first 1000 test images)")

# %%
# 3. Export to QONNX, as Brevitas users do
# ----------------------------------------
# ``export_qonnx`` writes the Brevitas quantizers as QONNX ops; qonnx's ``cleanup`` folds
# the shape arithmetic (FINN runs it first too).
work = tempfile.mkdtemp()
path = os.path.join(work, "net.qonnx.onnx")
export_qonnx(net, torch.from_numpy(x_test[:1]), export_path=path)
cleanup(path, out_file=path)
model = onnx.load(path)
name = model.graph.input[0].name
x = x_test[:1]
want = list(execute_onnx(ModelWrapper(model).transform(InferShapes()),
                         {name: x}).values())[0]

# %%
# 4. Compile for each target and check it
# ---------------------------------------
# ``summary`` shows how tvm_qnn sees each layer: its precision and bit operations, or why it
# would stay float. Here every layer is bit-serial: the binary weights become one bit-plane,
# the MaxPools pool the codes, each BatchNorm and sign quantizer folds into the previous
# layer's integer thresholds.
print(tvm_qnn.summary(model))
for target in ("x86", "arm_cpu", "accel"):
    art = tvm_qnn.compile(model, target=target)
    same = np.array_equal(art.run(x), want)
    print(f"{target:<8} vs qonnx's execution:", "bit-exact" if same else "DIFFERENT")
    assert same

# %%
# 5. Speed on this CPU
# --------------------
# The same network in float (weights folded, quantizers removed) run by onnxruntime is the
# baseline a Brevitas user would otherwise deploy.
import onnxruntime as ort  # noqa: E402

art = tvm_qnn.compile(model, target="x86", threads=1)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(float_model(model).SerializeToString(), opts)
feeds = {sess.get_inputs()[0].name: x}
for _ in range(20):
    sess.run(None, feeds)
start = time.perf_counter()
for _ in range(200):
    sess.run(None, feeds)
ort_ms = (time.perf_counter() - start) / 200 * 1e3
qnn_ms = art.benchmark(x) * 1e3
print(f"tvm_qnn {qnn_ms:.3f} ms, onnxruntime fp32 {ort_ms:.3f} ms "
      f"({ort_ms / qnn_ms:.1f}x), one thread")
