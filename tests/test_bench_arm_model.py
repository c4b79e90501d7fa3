# SPDX-License-Identifier: Apache-2.0
"""The ARM speed model behind ``tvm-qnn bench --target arm_cpu:<board>`` (llvm-mca)."""

import shutil

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("llvm-mca-19") is None and shutil.which("llvm-mca") is None,
    reason="llvm-mca is not installed (make sysdeps installs llvm-19)")


def test_cli_prints_the_model_of_the_board(capsys):
    from tvm_qnn.cli import main

    assert main(["bench", "--target", "arm_cpu:rasp4b", "--layers", "conv7", "--bits", "1"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("model")]
    assert "not a measurement" in line
    row = dict(kv.split("=") for kv in line.split(": ", 1)[1].split())
    assert row["board"] == "rasp4b" and row["mcpu"] == "cortex-a72" and row["bits"] == "W1A1"
    # The kernel's loop is cut from the generated code; the bounds come from the core model.
    assert int(row["loop_cnt"]) >= 16
    assert 0 < float(row["of_cnt_bound"]) <= float(row["of_xpa_bound"]) <= 1.0
    # W1A1 must beat the fp32 model of the same core by a wide margin (the 8x).
    assert float(row["x_fp32_model"]) >= 8


def test_unknown_target_is_refused():
    from bench.__main__ import main

    with pytest.raises(SystemExit, match="arm_cpu"):
        main(["--target", "riscv"])
