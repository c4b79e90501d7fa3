# SPDX-License-Identifier: Apache-2.0
"""
Run a quantized model on the bit-serial accelerator
===================================================

tvm_qnn's third target is a VTA-style accelerator whose GEMM core multiplies one activation
bit-plane block by one weight bit-plane block per cycle with xor + popcount and adds the result
shifted by 2^(i+j) (``docs/accelerator.md``). No FPGA is reachable from here, so it runs in the
project's C++ simulator, which computes the exact result and counts cycles like the hardware
would. ``compile(model, target="accel")`` sends every layer the accelerator can run there and
keeps the rest (and each layer's float requantize) on the host CPU.

Run it with ``python tutorials/05_accelerator.py``.
"""

import logging
import os

import numpy as np

import tvm_qnn
from tvm_qnn.bitserial_accel import AccelConfig

MODELS = os.path.join(os.path.dirname(tvm_qnn.__file__), "models")

# %%
# 1. Compile for the accelerator
# ------------------------------
# The shipped CNV trained with 2-bit weights and activations. With the ``tvm_qnn`` logger at
# INFO, the compiler says where each layer goes and how it was tiled.
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
logging.getLogger("tvm_qnn").setLevel(logging.INFO)
model = os.path.join(MODELS, "CNV_2W2A.onnx")
art = tvm_qnn.compile(model, target="accel")
logging.getLogger("tvm_qnn").setLevel(logging.WARNING)
print(art)

# %%
# 2. Run it, and check it
# -----------------------
# ``run`` executes the model: host code compiled by TVM, and for each offloaded layer the
# driver packs the input bit-planes into the accelerator's DRAM, runs the program on the
# simulator and hands the branch sums back to the host epilogue. The result is bit for bit the
# CPU kernels' result, which is itself the ONNX reference's.
x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
cpu = tvm_qnn.compile(model, target="x86")
same = np.array_equal(art.run(x), cpu.run(x))
print("accelerator == CPU kernels:", "bit-exact" if same else "DIFFERENT")
assert same

# %%
# 3. Profile
# ----------
# ``profile`` runs once more and reports the cycle model per layer: cycles, the GEMM core's
# busy fraction (``utilization``), the useful fraction of its peak (``efficiency``: lanes and
# output channels that pad a block do not count), DRAM traffic and GOPS at the configured
# 100 MHz clock. The first layer has one input channel (the compiler gathers its 3x3 windows
# into rows, im2col) and the narrow early layers leave lanes of the 64-bit planes empty.
for r in art.profile(x):
    print(f"{r['name']:<8} {r['bits']:<5} {r['cycles']:>7} cycles  "
          f"utilization {r['utilization']:6.1%}  efficiency {r['efficiency']:6.1%}  "
          f"{r['dram_bytes'] / 1e3:7.1f} kB DRAM  {r['gops']:6.1f} GOPS")

# %%
# 4. Another accelerator
# ----------------------
# The hardware is a ``config.json``: block sizes, buffer sizes, DRAM bandwidth, clock. A core
# twice as wide in output channels, as a file passed with ``target="accel:<path>"`` (or the
# ``--config`` of ``tvm-qnn sim``, which prints this table for a model or the layer suite).
wide = AccelConfig.load().replace(name="wide", block_out=32, wgt_buff_bytes=2 * 262144)
path = os.path.abspath("wide.json")
with open(path, "w", encoding="utf-8") as f:
    f.write(wide.to_json())
art_wide = tvm_qnn.compile(model, target=f"accel:{path}")
before = sum(r["cycles"] for r in art.profile(x))
after = sum(r["cycles"] for r in art_wide.profile(x))
print(f"cycles: {before} (16x64 core) -> {after} (32x64 core), {before / after:.2f}x")
assert np.array_equal(art_wide.run(x), cpu.run(x))
print("wide accelerator: bit-exact")
