# SPDX-License-Identifier: Apache-2.0
"""The Verilog GEMM core in co-simulation: RTL mode and functional mode agree bit for bit,
cycle counts included (docs/accelerator_rtl.md).

Needs verilator (``make test`` installs it); every test here skips with the reason without it.
Each configuration is verilated once (10-15 s) and cached under ``$TVM_QNN_CACHE_DIR``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_bitserial_accel_sim import SMALL, _conv_program, _random_program

import tvm_qnn
from tvm_qnn import bitserial_accel as accel
from tvm_qnn.bitserial_accel import AccelConfig, Program, Simulator, rtl
from tvm_qnn.errors import ConfigError

pytestmark = pytest.mark.skipif(rtl.unavailable_reason() is not None,
                                reason=f"RTL co-simulation: {rtl.unavailable_reason()}")

MODELS = os.path.join(os.path.dirname(tvm_qnn.__file__), "models")
# Odd shapes for the parameterization: block_in not a power of two (the popcount tree pads),
# the shortest pipeline (no register inside the tree, the SRAM read issued from the input
# port), and one longer than the tree is deep (a delay line after the root).
ODD = [AccelConfig(block_in=192, block_out=3, gemm_pipeline_cycles=2, inp_buff_bytes=64 * 24,
                   wgt_buff_bytes=64 * 72, acc_buff_bytes=64 * 12, uop_buff_bytes=64 * 8),
       AccelConfig(batch=3, block_in=64, block_out=2, gemm_pipeline_cycles=9,
                   inp_buff_bytes=64 * 24, wgt_buff_bytes=64 * 16, acc_buff_bytes=64 * 24,
                   uop_buff_bytes=64 * 8)]


def _both(cfg: AccelConfig, program, dram, trace: bool = True):
    """Run in both modes; assert the same DRAM and the same statistics (cycles included)."""
    sim = Simulator(cfg)
    out_f, stats_f = sim.run(program, dram, trace=trace)
    out_r, stats_r = sim.run(program, dram, trace=trace, gemm="rtl")
    assert np.array_equal(out_f, out_r)
    assert stats_f == stats_r
    return out_f, stats_f


def _hazard_program(rng, cfg: AccelConfig, dram: np.ndarray) -> Program:
    """GEMMs whose steps hit a few accumulator rows back to back, one or two cycles apart
    (the cases the core's write forwarding exists for), over random accumulator contents, with
    1..8-bit planes (shifts up to 14), both modes and resets in between.

    DRAM (bytes): inputs at 0, weights at 8 KiB, micro-ops at 16 KiB, accumulator preload
    at 24 KiB, output at 32 KiB.
    """
    n_uops = min(cfg.uop_entries, 24)
    # Rows 0, 1, 0, 1 first: with 1-cycle steps a row comes back two cycles later.
    uops = accel.encode_uops([(r, int(rng.integers(0, 4)), int(rng.integers(0, 4)))
                              for r in (0, 1, 0, 1)]
                             + [(int(rng.integers(0, 3)), int(rng.integers(0, 4)),
                                 int(rng.integers(0, 4))) for _ in range(n_uops - 4)])
    dram[16384:16384 + uops.size] = uops
    p = Program()
    p.load("INP", sram_base=0, dram_base=0, x_size=16)
    p.load("WGT", sram_base=0, dram_base=8192 // cfg.wgt_entry_bytes, x_size=16, push_next=True)
    p.load("UOP", sram_base=0, dram_base=16384 // 8, x_size=n_uops)
    p.load("ACC", sram_base=0, dram_base=24576 // cfg.acc_entry_bytes, x_size=4)
    for k in range(8):
        a_bits, w_bits = (int(v) for v in rng.choice([1, 1, 1, 2, 3, 8], 2))
        bgn = int(rng.integers(0, n_uops - 1))
        end = int(rng.integers(bgn + 1, n_uops + 1))
        reset = rng.random() < 0.15
        p.gemm(uop_bgn=bgn, uop_end=end, iter_out=int(rng.integers(1, 3)),
               iter_in=int(rng.integers(1, 3)), a_bits=a_bits, w_bits=w_bits, reset=reset,
               mode=str(rng.choice(["XOR", "AND"])), dst_factor=(int(rng.integers(0, 2)), 0),
               src_factor=(0, int(rng.integers(0, 2))), wgt_factor=(int(rng.integers(0, 2)), 0),
               pop_prev=k == 0)
    # The two forwarding cases for sure (last, so no reset erases them): rows 0, 1, 0, 1 one
    # cycle each (a row's write still in flight when it is read again), and row 0 three times
    # with 2-cycle steps.
    p.gemm(uop_bgn=0, uop_end=4, mode="XOR")
    p.gemm(uop_bgn=0, uop_end=1, iter_in=3, a_bits=2, mode="AND", src_factor=(0, 1))
    p.finish(push_next=True)
    p.store(sram_base=0, dram_base=32768 // (cfg.batch * cfg.block_out * 4), x_size=4,
            pop_prev=True)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_random_programs_rtl_equals_functional(seed):
    rng = np.random.default_rng(seed)
    dram = rng.integers(0, 256, 1 << 16, dtype=np.uint8)
    p = _random_program(rng, SMALL, dram.size)
    for r in range(3):  # micro-op tables, as tests/test_bitserial_accel_sim.py writes them
        uops = accel.encode_uops([(int(rng.integers(0, 8)), int(rng.integers(0, 8)),
                                   int(rng.integers(0, 8))) for _ in range(8)])
        dram[8 * r * 8:8 * r * 8 + uops.size] = uops
    out, _ = _both(SMALL, p, dram)
    assert np.array_equal(out, accel.run_reference(SMALL, p, dram))


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [SMALL, *ODD], ids=["small", "block_in192_pipe2",
                                                     "batch3_pipe9"])
@pytest.mark.parametrize("seed", range(4))
def test_back_to_back_steps_on_one_row(cfg, seed):
    rng = np.random.default_rng(100 + seed)
    dram = rng.integers(0, 256, 1 << 16, dtype=np.uint8)
    p = _hazard_program(rng, cfg, dram)
    out, stats = _both(cfg, p, dram)
    assert np.array_equal(out, accel.run_reference(cfg, p, dram))
    gemms = [t for t in stats["trace"] if t["op"] == "GEMM"]
    assert gemms and all(t["end"] - t["start"] > cfg.gemm_pipeline_cycles for t in gemms)


@pytest.mark.slow
def test_conv3x3_program_rtl_equals_functional():
    """The double-buffered 3x3 conv of tests/test_bitserial_accel_sim.py (A2 W1: 2-cycle steps
    summing into one row, resets, ALU epilogue), default configuration 1x64x16, random data."""
    cfg = AccelConfig()
    H = W = 8
    p, wgt_off, uop_off, uop_list, out_off = _conv_program(cfg, H, W, 2, pad_code=1, n=9 * 64)
    rng = np.random.default_rng(7)
    dram = rng.integers(0, 256, out_off + H * W * 64 * 4, dtype=np.uint8)
    ub = accel.encode_uops(uop_list)
    dram[uop_off * 8:uop_off * 8 + ub.size] = ub
    _, stats = _both(cfg, p, dram)
    assert stats["gemm"]["utilization"] > 0.5


def test_trained_cnv_layers_rtl_equals_functional():
    """Every offloaded layer of the trained CNV_1W1A (W5A8 first conv on im2col rows, W1A1
    convs, W5A8 dense), default configuration, on the inputs the layers really get."""
    art = tvm_qnn.compile(os.path.join(MODELS, "CNV_1W1A.onnx"), target="accel")
    checked = []

    class BothModes:
        """Stands in for a layer's simulator: runs both modes, compares, returns one."""

        def __init__(self, sim: Simulator, name: str):
            self.sim, self.name = sim, name

        def run(self, program, dram, **kw):
            out, stats = _both(self.sim.config, program, dram, trace=False)
            checked.append((self.name, stats["gemm"]["active_cycles"]))
            return out, stats

    for name, layer in art.accel_layers.items():
        layer.simulator = BothModes(layer.simulator, name)
    images = np.random.default_rng(0).random((2, 1, 1, 28, 28), np.float32)
    for x in images:
        art.run(x)
    assert sorted({n for n, _ in checked}) == sorted(art.accel_layers)
    assert sum(c for _, c in checked) > 100_000  # the core really ran: ~100k plane pairs/image


def test_wrong_library_and_bad_arguments_are_refused():
    from tvm_qnn.bitserial_accel._lib import library

    lib = rtl.build_gemm_core(SMALL)
    p = Program()
    p.finish()
    with pytest.raises(ConfigError, match="was built for batch=2 block_in=128 block_out=4"):
        library().run(AccelConfig().to_json(), bytes(p), b"\0" * 64, False, 10**9, lib)
    with pytest.raises(ConfigError, match="cannot load"):
        library().run(SMALL.to_json(), bytes(p), b"\0" * 64, False, 10**9, "/nonexistent.so")
    with pytest.raises(ValueError, match="gemm='verilog'"):
        Simulator(SMALL).run(p, b"\0" * 64, gemm="verilog")
    with pytest.raises(rtl.RtlUnavailable, match="at least 2 pipeline stages"):
        rtl.build_gemm_core(SMALL.replace(gemm_pipeline_cycles=1))


def test_verilog_lints_clean_in_every_tool():
    """verilator -Wall for several parameter sets, and iverilog -g2005 and yosys (if
    installed) read the same files: plain Verilog-2005."""
    import shutil
    import subprocess

    src = rtl.source_dir()
    files = [os.path.join(src, f) for f in ("gemm_core.v", "gemm_top.v", "io_harness.v")]
    for params in (["-GPIPE=2"], ["-GPIPE=4"], ["-GPIPE=9", "-GBATCH=2"],
                   ["-GBLOCK_IN=192", "-GBLOCK_OUT=3"]):
        r = subprocess.run(["verilator", "--lint-only", "-Wall", files[0], "--top-module",
                            "gemm_core", *params], capture_output=True, text=True)
        assert r.returncode == 0 and not r.stderr.strip(), (params, r.stderr)
    if shutil.which("iverilog"):
        r = subprocess.run(["iverilog", "-g2005", "-Wall", "-o", os.devnull, "-s", "io_harness",
                            *files], capture_output=True, text=True)
        assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    if shutil.which("yosys"):
        r = subprocess.run(["yosys", "-q", "-p", f"read_verilog {' '.join(files)}; "
                            "hierarchy -top io_harness; proc; check -assert"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
