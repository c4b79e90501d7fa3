# SPDX-License-Identifier: Apache-2.0
"""
Tune the bit-serial kernels for this CPU
========================================

Every bit-serial layer is compiled from a schedule template with parameters (how many output
rows and columns one register tile holds, for instance). The defaults are good on the machines
we measured; ``tvm_qnn.tune`` searches them on *your* device with TVM's MetaSchedule and its
XGBoost cost model, and ``compile(..., tuning_db=...)`` uses what it found.

Run it with ``python tutorials/04_autotune.py``; under ``CI=true`` the trial budget is tiny.
"""

import os
import tempfile

import numpy as np

import tvm_qnn
from tvm_qnn.testing.onnx_models import make_cnn_model, random_input, run_reference

CI = os.environ.get("CI") == "true"

# %%
# 1. A model and a place for the records
# --------------------------------------
# The tuning records are MetaSchedule's JSON database in ``work_dir``. Keep the directory: a
# second ``tune`` on it resumes (kernels that have their trials are skipped), and ``compile``
# reads it.
model = make_cnn_model("qcdq", bits=2)
work_dir = os.path.join(tempfile.mkdtemp(), "tuning")

# %%
# 2. Tune
# -------
# One task per distinct layer kernel (layers of the same shape and bits share one). For each,
# the default template is measured first, then the search measures up to ``trials``
# candidates; a progress bar per task shows how far it is.
trials = 2 if CI else 32
tvm_qnn.tune(model, target="x86", trials=trials, work_dir=work_dir, seed=0)

# %%
# 3. What it found
# ----------------
# ``tune_report`` times the best record and the default template of each task the same way.
# Small layers like these leave little to find; the larger layers of ``bench/`` more.
for row in tvm_qnn.tune_report(model, target="x86", tuning_db=work_dir):
    print(f"{row.task:<10} {row.kind:<7} {row.bits:<5} trials={row.trials:<3} "
          f"tuned={row.best_ms:.4f} ms default={row.default_ms:.4f} ms "
          f"speed-up={row.speedup:.2f}x")

# %%
# 4. Compile with the records
# ---------------------------
# Layers found in the database get their tuned schedule (``tvm-qnn -v`` or logging at INFO
# shows which); the others keep the default template. The numbers do not change: tuning moves
# loops, never arithmetic, so the result stays bit-exact against ONNX's own reference.
art = tvm_qnn.compile(model, target="x86", tuning_db=work_dir)
feeds = random_input(model, seed=3)
np.testing.assert_array_equal(art.run(feeds), run_reference(model, feeds)[0])
print("tuned model: bit-exact against onnx.reference")
