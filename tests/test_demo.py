# SPDX-License-Identifier: Apache-2.0
"""The trained CNVs shipped in tvm_qnn/models: their compiled accuracy is the recorded one,
and the README's main job (the demo) runs them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tvm_qnn
from tvm_qnn.errors import TvmQnnError

MODELS = os.path.join(os.path.dirname(tvm_qnn.__file__), "models")
RECORD = os.path.join(MODELS, "models.json")


def _fashion_test():
    from tvm_qnn.data import load_fashion_mnist

    try:
        return load_fashion_mnist("test", unit=True)
    except TvmQnnError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("name", ["CNV_2W2A", "CNV_1W1A"])
def test_shipped_model_accuracy_is_the_recorded_one(name):
    with open(RECORD, encoding="utf-8") as f:
        record = json.load(f)[name]
    x, y = _fashion_test()
    art = tvm_qnn.compile(os.path.join(MODELS, f"{name}.onnx"), target="x86")
    assert all(r["bitserial"] for r in art.layers)
    correct = sum(int(np.argmax(art.run(x[i:i + 1])) == y[i]) for i in range(len(x)))
    # Every test logit of this file was checked bit-exact against PyTorch when it was
    # exported; the compiled accuracy must therefore be PyTorch's, to the image.
    assert 100.0 * correct / len(x) == pytest.approx(record["compiled_accuracy"], abs=1e-9)
    assert record["compiled_accuracy"] == pytest.approx(record["test_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_demo_runs_the_shipped_models():
    _fashion_test()
    proc = subprocess.run([sys.executable, "-m", "tvm_qnn.demo", "--images", "300"],
                          capture_output=True, text=True, timeout=900, check=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("demo: model=")]
    assert [line.split()[1] for line in lines] == ["model=CNV_2W2A", "model=CNV_1W1A"]


def test_random_demo_is_bit_exact():
    proc = subprocess.run([sys.executable, "-m", "tvm_qnn.demo", "--random", "--images", "3"],
                          capture_output=True, text=True, timeout=900, check=True)
    assert "demo: bitexact=3/3" in proc.stdout
    assert "weights are RANDOM" in proc.stdout


@pytest.mark.slow
def test_shipped_w1a1_runs_on_the_emulated_arm_device():
    import shutil

    if shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("qemu-user / gcc-aarch64-linux-gnu are not installed (make sysdeps)")
    x, _ = _fashion_test()
    path = os.path.join(MODELS, "CNV_1W1A.onnx")
    arm = tvm_qnn.compile(path, target="arm_cpu")
    host = tvm_qnn.compile(path, target="x86")
    for i in range(2):
        np.testing.assert_array_equal(arm.run(x[i:i + 1]), host.run(x[i:i + 1]))


def test_demo_refuses_a_target_this_cpu_cannot_run():
    proc = subprocess.run([sys.executable, "-m", "tvm_qnn.demo", "--target", "arm_cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "cannot run natively on this CPU" in proc.stderr and "x86:haswell" in proc.stderr
