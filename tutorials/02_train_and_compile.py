# SPDX-License-Identifier: Apache-2.0
"""
Train a {-1,+1}-encoded network, then compile it
================================================

The method of Sun et al. (arXiv 2106.09886) trains each M-bit weight as a sum of M {-1, +1}
bit-planes, ``W = s · sum_i 2^i b_i``, with an approximate (straight-through) gradient, and
starts low-bit models from trained higher-bit ones. This tutorial does that with
``tvm_qnn.nn`` on scikit-learn's 8×8 digits (Fashion-MNIST works the same way: see
``python -m tvm_qnn.train --help``), then compiles the trained model two ways — through ONNX
and directly from ``torch.export`` — and checks that the compiled bit-serial code returns
exactly PyTorch's logits.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

import tvm_qnn
from tvm_qnn.data import load_digits
from tvm_qnn.nn import encode_planes, export_onnx, init_from_higher_bit
from tvm_qnn.nn.models import build

CI = os.environ.get("CI") == "true"
torch.manual_seed(0)
x_train, y_train = (torch.from_numpy(a) for a in load_digits("train"))
x_test, y_test = (torch.from_numpy(a) for a in load_digits("test"))
CHANNELS = (16, 16, 32, 32, 32, 32)


def fit(model, epochs):
    """A few epochs of Adam; the first batch initialises the quantizer steps."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for i in torch.randperm(len(x_train)).split(64):
            loss = F.cross_entropy(model(x_train[i]), y_train[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return 100.0 * float((model(x_test).argmax(1) == y_test).float().mean())


# %%
# 1. W4A4, then W1A2 started from it
# ----------------------------------
# ``build("w4a4")`` is a small VGG-like CNN whose hidden convolutions have 4-bit bipolar
# weights and 4-bit activations (the first and last layers stay at 8 bits).
epochs = 2 if CI else 8
w4a4 = build("w4a4", CHANNELS)
print(f"W4A4 accuracy: {fit(w4a4, epochs):.1f} %")

w1a2 = init_from_higher_bit(build("w1a2", CHANNELS), w4a4.state_dict())
print(f"W1A2 accuracy (from W4A4): {fit(w1a2, epochs):.1f} %")

# %%
# 2. The encoding
# ---------------
# A weight code is a sum of {-1, +1} planes scaled by 2^i; with 1 bit it is just the sign.
layer = w1a2[3]
codes = layer.weight_quant.codes(layer.weight).detach()
planes = encode_planes(codes, layer.weight_quant.bits)
print("codes in", sorted(torch.unique(codes).tolist()), "planes", tuple(planes.shape))

# %%
# 3. Compile it, through ONNX and through torch.export
# ----------------------------------------------------
x = x_test[:1]
onnx_model = export_onnx(w1a2, x)
via_onnx = tvm_qnn.compile(onnx_model, target="x86")
via_export = tvm_qnn.compile(w1a2, target="x86", example_inputs=(x,))
print(tvm_qnn.summary(onnx_model))

n = 50 if CI else len(x_test)
exact = 0
with torch.no_grad():
    for i in range(n):
        want = w1a2(x_test[i:i + 1]).numpy()
        a = via_onnx.run(x_test[i:i + 1].numpy())
        b = via_export.run(x_test[i:i + 1].numpy())
        exact += int(np.array_equal(a, want) and np.array_equal(b, want))
print(f"bit-exact with PyTorch on {exact}/{n} test images (ONNX and torch.export paths)")
assert exact == n
