# SPDX-License-Identifier: Apache-2.0
"""compile(target="accel"): lowering to accelerator programs, the driver, profile, fallback."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from conftest import examples
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tvm_qnn
from tvm_qnn.bitserial_accel import AccelConfig
from tvm_qnn.errors import NotOffloadable, TvmQnnError
from tvm_qnn.target.accel.lower import lower_layer
from tvm_qnn.target.accel.report import reference_p, simulate_layer
from tvm_qnn.testing.layers import random_layer
from tvm_qnn.testing.onnx_models import make_cnn_model, make_conv_model, random_input
from tvm_qnn.testing.suite import suite_layer
from tvm_qnn.topi.layer import plan_layer

MODELS = os.path.join(os.path.dirname(tvm_qnn.__file__), "models")
# Small buffers, so tiles, weight groups (double-buffered, ramped) and row tiles all occur
# on small layers.
SMALL = AccelConfig(inp_buff_bytes=8192, wgt_buff_bytes=4096, acc_buff_bytes=8192)


@settings(max_examples=examples(40))
@given(kind=st.sampled_from(["conv2d", "conv2d", "dense"]), a=st.integers(1, 4),
       w=st.integers(1, 3), cin=st.sampled_from([3, 20, 64, 96, 128]),
       cout=st.sampled_from([8, 16, 40, 64]), size=st.integers(3, 11),
       stride=st.integers(1, 2), dilation=st.integers(1, 2), pad=st.integers(0, 2),
       batch=st.integers(1, 2), small=st.booleans(), seed=st.integers(0, 10**6))
def test_layer_branch_sums_bit_exact(kind, a, w, cin, cout, size, stride, dilation, pad, batch,
                                     small, seed):
    """P from the simulator equals the integer formula for random layers and tilings
    (channel and output-block padding, LOAD or host padding, im2col, weight groups)."""
    assume(kind == "dense" or size + 2 * pad >= 2 * dilation + 1)  # else no output
    layer, codes = random_layer(kind, act_bits=a, weight_bits=w, in_channels=cin,
                                out_channels=cout, size=(size, size), strides=(stride, stride),
                                dilation=(dilation, dilation), pads=(pad,) * 4, batch=batch,
                                seed=seed, act_signed=bool(seed % 2))
    try:
        row = simulate_layer(layer, codes, SMALL if small else None)
    except NotOffloadable:
        assert small  # only the small buffers may refuse a layer
        assume(False)  # nothing ran: not an example of a bit-exact layer
    assert row["exact"], row
    assert 0 < row["utilization"] <= 1 and row["cycles"] > 0 and row["dram_bytes"] > 0


@pytest.mark.parametrize("case", [
    # kind, cin, cout, size (dense: batch), kernel, pad, (w, a), what the tiling must do
    ("conv2d", 64, 64, 9, 3, 1, (1, 2), dict(double_weights=True, hw_pad=True, row_tiles=True)),
    ("conv2d", 96, 40, 6, 2, 1, (2, 1), dict(double_weights=True, hw_pad=False,
                                             row_tiles=True)),
    ("conv2d", 3, 24, 10, 3, 2, (2, 8), dict(im2col=True, row_tiles=True)),
    ("dense", 200, 40, 7, 1, 0, (3, 2), dict(double_weights=True, im2col=False)),
])
def test_tilings_on_small_buffers_stay_exact(case):
    kind, cin, cout, size, k, pad, (w, a), expect = case
    shape = dict(batch=size) if kind == "dense" else dict(size=(size, size), kernel=(k, k),
                                                          pads=(pad,) * 4)
    layer, codes = random_layer(kind, act_bits=a, weight_bits=w, in_channels=cin,
                                out_channels=cout, seed=5, **shape)
    lw = lower_layer(plan_layer(layer), SMALL)
    got = dict(double_weights=lw.tiling.double_weights, hw_pad=lw.tiling.hw_pad,
               row_tiles=lw.tiling.rows < lw.geometry.oh, im2col=lw.geometry.im2col is not None)
    assert {key: got[key] for key in expect} == expect
    assert simulate_layer(layer, codes, SMALL)["exact"]


def test_groups_when_an_output_row_fills_the_accumulator():
    """Weights that fit the buffer whole, but 4 output blocks x 9 columns do not fit half the
    accumulator buffer (32 entries): the blocks must still go in groups."""
    cfg = AccelConfig(acc_buff_bytes=4096)
    layer, codes = random_layer("conv2d", act_bits=1, weight_bits=1, in_channels=64,
                                out_channels=64, size=(9, 9))
    lw = lower_layer(plan_layer(layer), cfg)
    assert lw.tiling.double_weights and max(lw.tiling.groups) * 9 <= 32
    assert simulate_layer(layer, codes, cfg)["exact"]


def test_reference_p_matches_bit_planes():
    """The integer formula itself, against explicit xor + popcount of bit-planes."""
    layer, codes = random_layer("dense", act_bits=3, weight_bits=2, in_channels=10,
                                out_channels=4, batch=2, seed=3)
    plan = plan_layer(layer)
    u = codes.astype(np.int64) - layer.act_lo
    v = layer.weight - layer.weight.min(axis=1, keepdims=True)
    p = np.zeros((2, 4), np.int64)
    for i in range(3):
        for j in range(2):
            p += ((((u[:, None, :] >> i) & 1) ^ ((v[None] >> j) & 1)).sum(-1)) << (i + j)
    assert np.array_equal(reference_p(layer, codes, plan.pad_code), p)


@pytest.mark.parametrize("name,w,a", [("conv28", 1, 1), ("conv7", 2, 2), ("conv56", 1, 2)])
def test_suite_convs_keep_the_gemm_core_busy(name, w, a):
    """Issue 7's goal: >= 80 % GEMM utilization on 3x3 convs with >= 64 channels."""
    layer, codes = suite_layer(name, w, a)
    row = simulate_layer(layer, codes)
    assert row["exact"]
    assert row["utilization"] >= 0.8, row


def test_tiling_uses_weight_groups_and_row_tiles():
    layer, _ = suite_layer("conv7", 1, 1)
    lw = lower_layer(plan_layer(layer), AccelConfig())
    assert len(lw.tiling.groups) > 1 and lw.tiling.groups[0] == 1  # ramped, double-buffered
    assert sum(lw.tiling.groups) == 512 // 16
    layer, _ = suite_layer("conv56", 1, 1)
    assert lower_layer(plan_layer(layer), AccelConfig()).tiling.rows < 56


def _shipped(name):
    return os.path.join(MODELS, name)


@pytest.mark.parametrize("model", ["CNV_1W1A.onnx", "CNV_2W2A.onnx"])
def test_trained_model_on_the_accelerator_is_bit_exact(model):
    art = tvm_qnn.compile(_shipped(model), target="accel")
    cpu = tvm_qnn.compile(_shipped(model), target="x86")
    assert all(row["device"] == "accel" for row in art.layers)
    from tvm_qnn.data import load_fashion_mnist

    try:
        images = load_fashion_mnist("test", unit=True)[0][:8]
    except TvmQnnError:  # the data package is missing: random images in [0, 1] then
        images = np.random.default_rng(0).random((8, 1, 28, 28), np.float32)
    for i in range(len(images)):
        x = images[i:i + 1]
        assert np.array_equal(art.run(x), cpu.run(x))
    rows = art.profile(images[:1])
    assert [r["name"] for r in rows] == [r["name"] for r in art.layers]
    for r in rows:
        assert r["device"] == "accel" and r["runs"] == 1
        assert r["cycles"] > 0 and 0 < r["utilization"] <= 1 and r["dram_bytes"] > 0
        assert 0 < r["efficiency"] <= r["utilization"]


def test_model_against_onnx_reference():
    """A QCDQ CNN (random weights) against the ONNX spec, through the accelerator."""
    from tvm_qnn.testing.onnx_models import run_reference

    model = make_cnn_model("qcdq", bits=2)
    feeds = random_input(model, seed=1)
    art = tvm_qnn.compile(model, target="accel")
    assert np.array_equal(art.run(feeds), run_reference(model, feeds)[0])


def test_layers_it_cannot_run_fall_back_to_the_cpu(caplog):
    model = make_conv_model("qcdq", in_ch=8, out_ch=8, groups=2, act_bits=2, weight_bits=2)
    feeds = random_input(model)
    with caplog.at_level(logging.INFO, logger="tvm_qnn"):
        art = tvm_qnn.compile(model, target="accel")
    assert "runs on the host CPU, not the accelerator: grouped convolution" in caplog.text
    (row,) = art.layers
    assert row["device"] == "cpu" and "grouped" in row["offload_reason"]
    cpu = tvm_qnn.compile(model, target="x86")
    assert np.array_equal(art.run(feeds), cpu.run(feeds))
    # Nothing offloaded: profile() times the host's code, as for a CPU target.
    rows = art.profile(feeds)
    assert [r["layer"] for r in rows if r["kind"] == "layer"] == [row["name"]]


def test_buffers_too_small_say_why():
    layer, _ = random_layer("conv2d", in_channels=512, out_channels=16, size=(30, 30),
                            act_bits=4)
    tiny = AccelConfig(inp_buff_bytes=1024)
    with pytest.raises(NotOffloadable, match="one output row reads .* input entries"):
        lower_layer(plan_layer(layer), tiny)


def test_export_is_refused_and_writes_nothing(tmp_path):
    model = make_conv_model("qcdq", act_bits=2, weight_bits=1)
    art = tvm_qnn.compile(model, target="accel")
    with pytest.raises(TvmQnnError, match="cannot be exported"):
        art.export_library(tmp_path / "m.so")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_other_config_from_json(tmp_path):
    cfg = AccelConfig(block_out=32, name="bigger")
    path = tmp_path / "cfg.json"
    path.write_text(cfg.to_json())
    art = tvm_qnn.compile(_shipped("CNV_1W1A.onnx"), target=f"accel:{path}")
    assert "bigger" in art.target and "32x64" in art.target
    x = np.zeros((1, 1, 28, 28), np.float32)
    cpu = tvm_qnn.compile(_shipped("CNV_1W1A.onnx"), target="x86")
    assert np.array_equal(art.run(x), cpu.run(x))


def test_cli_sim_reports_suite_and_model(capsys, tmp_path):
    from tvm_qnn.cli import main

    out_json = tmp_path / "sim.json"
    assert main(["sim", "--layers", "conv7", "--bits", "1x1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("conv7")]
    fields = row.split()
    assert fields[1] == "W1A1" and int(fields[2]) > 0 and fields[-1] == "yes"
    summary = [line for line in out.splitlines() if line.startswith("sim:")][0]
    assert float(summary.split("min_conv_utilization=")[1].split()[0]) >= 0.8
    import json

    assert json.loads(out_json.read_text())["layers"][0]["exact"] is True
    assert main(["sim", _shipped("CNV_1W1A.onnx")]) == 0
    out = capsys.readouterr().out
    assert "conv_4" in out and "not_exact=0" in out and "accel=7" in out


def test_tuned_tilings_resume_apply_and_stay_exact(tmp_path, monkeypatch):
    """tune(model, "accel"): each layer's tiling searched on the simulator (never slower than
    the pipeline model's pick), a re-run simulates nothing, and compile applies the records
    (fewer cycles, same bits as the CPU kernels)."""
    from tvm_qnn.target.accel.tiling import tiling_space

    monkeypatch.setenv("TVM_QNN_SCHEDULES", "off")
    model = _shipped("CNV_1W1A.onnx")
    work = tmp_path / "tilings"
    report = tvm_qnn.tune(model, "accel", work_dir=work)
    assert set(report) == {"conv_1", "conv_4", "conv_8", "conv_11", "conv_15", "conv_18",
                           "fc_23"}
    assert all(r["cycles"] <= r["default_cycles"] for r in report.values())
    assert any(r["cycles"] < r["default_cycles"] for r in report.values())
    layer, _ = suite_layer("conv56", 1, 1)
    assert len(tiling_space(plan_layer(layer), AccelConfig.load())) > 10
    text = (work / "accel_tilings.json").read_text()
    tvm_qnn.tune(model, "accel", work_dir=work)
    assert (work / "accel_tilings.json").read_text() == text
    x = np.random.default_rng(3).random((1, 1, 28, 28), dtype=np.float32)
    default = tvm_qnn.compile(model, "accel")
    tuned = tvm_qnn.compile(model, "accel", tuning_db=work)
    want = tvm_qnn.compile(model, "x86").run(x)
    np.testing.assert_array_equal(tuned.run(x), want)
    cycles = [sum(r.get("cycles", 0) for r in art.profile(x)) for art in (default, tuned)]
    assert cycles[1] < cycles[0]


def test_shipped_tilings_are_used(caplog):
    with caplog.at_level(logging.INFO, logger="tvm_qnn"):
        tvm_qnn.compile(_shipped("CNV_2W2A.onnx"), "accel")
    assert "accelerator tilings:" in caplog.text and "accel-zynq7020-bitserial" in caplog.text
    assert caplog.text.count("(tuned tiling)") == 7
