# SPDX-License-Identifier: Apache-2.0
"""``tvm-qnn summary`` / ``compile`` / ``tune``: tables, greppable result lines, exit codes."""

import os
import re
import subprocess
import sys

import onnx
import pytest

import tvm_qnn
from tvm_qnn import cli
from tvm_qnn.testing.onnx_models import make_cnn_model


def _model(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(make_cnn_model("qcdq", bits=2), path)
    return str(path)


def test_summary_table_and_line(tmp_path, capsys):
    assert cli.main(["summary", _model(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^conv1\s+conv2d\s+W2A2\s+3,612,672\s+14,450,688\s+4,608", out, re.M)
    assert "MACs by precision: W2A2: 5,419,008, W8A8: 113,216" in out
    assert re.search(r"^summary: 4/4 layers bit-serial, BOPs \d+$", out, re.M)


def test_compile_writes_a_loadable_library(tmp_path, capsys):
    out_path = tmp_path / "m.so"
    assert cli.main(["compile", _model(tmp_path), "--target", "x86", "-o", str(out_path),
                     "--threads", "1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"compiled: \S+m\.so target=x86 \(.*\) bitserial_layers=4/4 "
                        r"seconds=[\d.]+", line), line
    loaded = tvm_qnn.load(out_path)
    assert loaded.inputs[0].name == "image" and loaded.threads == 1


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert cli.main(["summary", str(tmp_path / "nope.onnx")]) == 2
    assert "error: no model file" in capsys.readouterr().err
    # Targets without an emulated device have nothing to serve (armv7: no TVM wheels).
    for target in ("x86", "arm_cpu:rasp3b"):
        assert cli.main(["device", "start", "--target", target]) == 2
        assert "no emulated device to serve over RPC" in capsys.readouterr().err


def test_console_script_and_verbose_log(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "tvm-qnn")
    proc = subprocess.run([exe, "-v", "summary", _model(tmp_path)], capture_output=True,
                          text=True, timeout=300, check=True)
    assert "summary: 4/4" in proc.stdout


@pytest.mark.slow
def test_tune_then_compile_with_the_database(tmp_path, capsys):
    # One trial: the default template measured and recorded, the search itself skipped.
    db = tmp_path / "db"
    assert cli.main(["tune", _model(tmp_path), "--trials", "1", "--work-dir", str(db),
                     "--keep-best"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^tuned: {re.escape(str(db))} tasks=4 seconds=[\d.]+$", out, re.M)
    assert "kept the best record of each kernel: 4 -> 4 records" in out
    assert re.search(r"^conv1\s+conv2d\s+W2A2\s+1\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M)
    assert cli.main(["compile", _model(tmp_path), "-o", str(tmp_path / "t.so"),
                     "--tuning-db", str(db)]) == 0
    assert cli.main(["compile", _model(tmp_path), "-o", str(tmp_path / "u.so"),
                     "--tuning-db", str(tmp_path / "none")]) == 2
    assert "no such directory" in capsys.readouterr().err
