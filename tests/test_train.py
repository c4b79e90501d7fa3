# SPDX-License-Identifier: Apache-2.0
"""Training script: determinism, resume after interruption, compiled model == PyTorch."""

import json

import numpy as np
import pytest

from tvm_qnn import TvmQnnError
from tvm_qnn import data as qdata
from tvm_qnn.train import main

SMALL = ["--dataset", "digits", "--channels", "8,8,16,16,16,16", "--batch-size", "256"]


def _result(out):
    return json.loads((out / "result.json").read_text())


def test_train_compile_and_resume(tmp_path):
    out = tmp_path / "w2a2"
    assert main(SMALL + ["--precision", "w2a2", "--epochs", "1", "--out", str(out)]) == 0
    first = _result(out)["history"]
    # "Interrupted" after epoch 1: asking for 2 epochs resumes instead of starting over.
    assert main(SMALL + ["--precision", "w2a2", "--epochs", "2", "--out", str(out),
                         "--compile"]) == 0
    result = _result(out)
    assert result["history"][0] == first[0] and len(result["history"]) == 2
    assert result["compiled_bitexact"] == "450/450"
    assert result["compiled_accuracy"] == pytest.approx(result["test_accuracy"])
    assert result["bitserial_layers"] == result["layers"] == 7


def test_deterministic_and_low_bit_from_high_bit(tmp_path):
    runs = []
    for name in ("a", "b"):
        main(SMALL + ["--precision", "fp32", "--epochs", "1", "--out", str(tmp_path / name)])
        runs.append(_result(tmp_path / name)["history"][0]["loss"])
    assert runs[0] == runs[1]
    assert main(SMALL + ["--precision", "w1a1", "--epochs", "1", "--out", str(tmp_path / "w1"),
                         "--init-from", str(tmp_path / "a" / "final.pt")]) == 0


def test_bad_precision(capsys):
    """A usage error naming the value (it was a ValueError traceback)."""
    with pytest.raises(SystemExit) as exit_:
        main(SMALL + ["--precision", "w9a2"])
    assert exit_.value.code == 2
    assert "argument --precision: precision 'w9a2': fp32 or wKaM" in capsys.readouterr().err


def test_fashion_mnist_loader(tmp_path, monkeypatch):
    try:
        qdata.fashion_mnist_dir()
    except TvmQnnError:
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make data)")
    x, y = qdata.load_fashion_mnist("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
    monkeypatch.setattr(qdata, "DEBIAN_FASHION_MNIST", tmp_path / "nothing")
    monkeypatch.delenv("TVM_QNN_DATA_DIR", raising=False)
    with pytest.raises(TvmQnnError, match="Fashion-MNIST not found"):
        qdata.load_fashion_mnist("train")
