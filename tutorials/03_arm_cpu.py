# SPDX-License-Identifier: Apache-2.0
"""
Compile for a Raspberry Pi and check it without one
===================================================

``target="arm_cpu"`` compiles for aarch64 Linux with NEON (default board: Raspberry Pi 4,
cortex-a72; ``"arm_cpu:rasp5"``, ``"arm_cpu:rasp3b-64"``, ``"arm_cpu:neoverse-n1"`` and the
32-bit ``"arm_cpu:rasp4b-32"`` / ``"arm_cpu:rasp3b"`` pick other rows of
``tvm_qnn.target.BOARDS``). On an x86 machine the library is cross-compiled with Debian's
``gcc-aarch64-linux-gnu``, and ``art.run`` executes it on an *emulated device*: an arm64
Python with TVM's aarch64 runtime under ``qemu-aarch64``, built once into
``~/.cache/tvm_qnn`` (the first run prints its progress). So you can check every output
before copying ``model.so`` (and ``model.so.json``) to the board, where ``tvm_qnn.load``
runs it natively.
"""

import re

import numpy as np

import tvm_qnn
from tvm_qnn.testing.onnx_models import make_cnn_model, random_input, run_reference

model = make_cnn_model("qcdq", bits=2)

# %%
# 1. Cross-compile
# ----------------
art = tvm_qnn.compile(model, target="arm_cpu")
print(art)

# The multi-branch kernels become NEON: ``eor`` of 128-bit vectors, ``cnt`` of their bytes,
# then pairwise widening adds (``uaddlp`` / ``uadalp``) into the accumulators.
asm = art.assembly()
for op in ("eor", "cnt", "uaddlp", "uadalp"):
    count = len(re.findall(r"\b" + op + r"\s+v\d+\.", asm))
    print(f"{op:7s} on vectors: {count}")

# %%
# 2. Run it on the emulated aarch64 device and compare with the ONNX reference
# ----------------------------------------------------------------------------
feeds = random_input(model, seed=1)
got = art.run(feeds)
want = run_reference(model, feeds)[0]
print("bit-exact under qemu-aarch64:", np.array_equal(got, want))
assert np.array_equal(got, want)

# %%
# 3. The file for the board
# -------------------------
path = art.export_library("/tmp/tvm_qnn_cnn_rasp4b.so")
print(f"wrote {path} (aarch64 ELF) and {path}.json; on the Pi: tvm_qnn.load({path!r}).run(x)")
