# SPDX-License-Identifier: Apache-2.0
"""Resource and clock estimates of the accelerator's GEMM core (src/accel/rtl).

    python -m bench.synth_accel [--json bench/results/accel_synth.json] [--quick]

* yosys ``synth_xilinx`` (7-series) of ``gemm_top`` -- the core with its accumulator SRAM --
  for the default configuration (1x64x16) and two larger ones (BLOCK_OUT 32, BLOCK_IN 128):
  LUT / FF / CARRY4 / MUXF / DSP / BRAM from yosys ``stat``.
* yosys ``synth_ice40`` + ``nextpnr-ice40 --hx8k`` of a small core (1x64x4, 256 accumulator
  rows) inside a pin-limited harness (``io_harness.v``): a placed-and-routed Fmax.
* GOPS per LUT: binary ops = 2 * BATCH * BLOCK_IN * BLOCK_OUT per cycle. The Xilinx rows use
  the configuration's ``clock_mhz`` (100 MHz, VTA's PYNQ clock): yosys gives no timing for
  7-series, so that clock is an assumption, not a measurement; the iCE40 row uses its
  nextpnr Fmax.

These are synthesis estimates (yosys mapping, nextpnr timing model), not a placed design on a
board: Vivado results differ (it maps popcounts and muxes differently and reports real timing).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from tvm_qnn.bitserial_accel import AccelConfig
from tvm_qnn.bitserial_accel.rtl import source_dir

DEFAULT_JSON = os.path.join(os.path.dirname(__file__), "results", "accel_synth.json")
NOTE = ("synthesis estimates (yosys 0.23 synth_xilinx / synth_ice40 + nextpnr-ice40), not a "
        "placed design on a board; the Xilinx GOPS use the configured clock (assumed, not timed)")

# Published figures of FINN- / VTA-class designs, only what the cited source states.
PUBLISHED = [
    {"design": "FINN (Umuroglu et al., FPGA 2017, arXiv:1612.07119)", "device": "Xilinx ZC706",
     "figures": "up to 12.3 M MNIST classifications/s at 0.31 us latency (95.8 %), 21 906 "
                "CIFAR-10 classifications/s at 283 us (80.1 %), < 25 W total system power",
     "source": "paper abstract, https://arxiv.org/abs/1612.07119",
     "note": "a per-network dataflow design, not an overlay; its per-layer LUT/BRAM table is "
             "not reproduced here because we could not re-check the numbers"},
    {"design": "VTA (Moreau et al., IEEE Micro 2019, arXiv:1807.04188)",
     "device": "Xilinx PYNQ-Z1 (Zynq-7020)",
     "figures": "default GEMM core 1x16x16 int8 at 100 MHz: 256 MACs/cycle = 51.2 GOPS peak "
                "(derived from the configuration, not quoted)",
     "source": "configuration of apache/tvm vta/config/vta_config.json (PYNQ, 100 MHz)",
     "note": "resource utilization not quoted: we do not recall the published table reliably"},
]


def _yosys_stat(log: str) -> dict[str, int]:
    """Cell counts of the last ``stat`` in a yosys log."""
    block = log[log.rfind("Number of cells:"):]
    cells = {}
    for m in re.finditer(r"^\s+(\S+)\s+(\d+)\s*$", block, re.M):
        cells[m.group(1)] = int(m.group(2))
    return cells


def _xilinx_summary(cells: dict[str, int]) -> dict[str, int]:
    def total(pattern):
        return sum(n for c, n in cells.items() if re.fullmatch(pattern, c))

    return {"lut": total(r"LUT[1-6]"), "ff": total(r"FD[A-Z]*"), "carry4": total(r"CARRY4"),
            "muxf7_8": total(r"MUXF[78]"), "dsp": total(r"DSP48E1"),
            "bram36": total(r"RAMB36E1"), "bram18": total(r"RAMB18E1"),
            "lutram": total(r"RAM\d+[MSX].*")}


def _run(cmd: list[str], cwd: str, log_name: str) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    log = r.stdout + r.stderr
    with open(os.path.join(cwd, log_name), "w") as f:
        f.write(log)
    if r.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}):\n{log[-3000:]}")
    return log


def _params(cfg: AccelConfig, acc_depth: int) -> str:
    return (f"-set BATCH {cfg.batch} -set BLOCK_IN {cfg.block_in} -set BLOCK_OUT "
            f"{cfg.block_out} -set PIPE {cfg.gemm_pipeline_cycles} -set ACC_DEPTH {acc_depth}")


def _ops_per_cycle(cfg: AccelConfig) -> int:
    return 2 * cfg.batch * cfg.block_in * cfg.block_out


def synth_xilinx(cfg: AccelConfig, work: str) -> dict:
    """yosys synth_xilinx of gemm_top for ``cfg`` (accumulator depth from acc_buff_bytes)."""
    src = source_dir()
    files = " ".join(os.path.join(src, f) for f in ("gemm_core.v", "gemm_top.v"))
    script = (f"read_verilog {files}; chparam {_params(cfg, cfg.acc_entries)} gemm_top; "
              "synth_xilinx -family xc7 -top gemm_top -flatten -noiopad; stat")
    t0 = time.time()
    log = _run(["yosys", "-p", script], work, f"xilinx_{cfg.block_in}x{cfg.block_out}.log")
    res = _xilinx_summary(_yosys_stat(log))
    gops = _ops_per_cycle(cfg) * cfg.clock_mhz / 1e3
    return {"config": f"{cfg.batch}x{cfg.block_in}x{cfg.block_out}", "target": "xc7 (yosys)",
            "acc_rows": cfg.acc_entries, "pipe": cfg.gemm_pipeline_cycles, **res,
            "clock_mhz": cfg.clock_mhz, "clock_source": "config (assumed)",
            "ops_per_cycle": _ops_per_cycle(cfg), "gops": gops,
            "gops_per_klut": 1e3 * gops / res["lut"] if res["lut"] else None,
            "seconds": round(time.time() - t0, 1)}


def place_ice40(cfg: AccelConfig, acc_depth: int, work: str, device: str = "hx8k",
                package: str = "ct256") -> dict:
    """synth_ice40 + nextpnr-ice40 of the core in io_harness.v: placed-and-routed Fmax."""
    src = source_dir()
    files = " ".join(os.path.join(src, f) for f in ("gemm_core.v", "gemm_top.v",
                                                    "io_harness.v"))
    t0 = time.time()
    log = _run(["yosys", "-p", f"read_verilog {files}; chparam {_params(cfg, acc_depth)} "
                f"io_harness; synth_ice40 -top io_harness -json ice40.json; stat"],
               work, "ice40_synth.log")
    cells = _yosys_stat(log)
    pnr = _run(["nextpnr-ice40", f"--{device}", "--package", package, "--json", "ice40.json",
                "--freq", "100", "--seed", "1", "--pcf-allow-unconstrained",
                "--timing-allow-fail"], work, "ice40_pnr.log")
    fmax = [float(x) for x in re.findall(r"Max frequency for clock '[^']*': ([\d.]+) MHz", pnr)]
    lcs = re.findall(r"ICESTORM_LC:\s+(\d+)/\s*(\d+)", pnr)
    brams = re.findall(r"ICESTORM_RAM:\s+(\d+)/\s*(\d+)", pnr)
    f = fmax[-1] if fmax else None
    luts = sum(n for c, n in cells.items() if c == "SB_LUT4")
    gops = _ops_per_cycle(cfg) * f / 1e3 if f else None
    return {"config": f"{cfg.batch}x{cfg.block_in}x{cfg.block_out}",
            "target": f"iCE40 {device.upper()} (nextpnr-ice40, seed 1)", "acc_rows": acc_depth,
            "pipe": cfg.gemm_pipeline_cycles, "lut4": luts,
            "ff": sum(n for c, n in cells.items() if c.startswith("SB_DFF")),
            "carry": cells.get("SB_CARRY", 0), "ebr": cells.get("SB_RAM40_4K", 0),
            "logic_cells": f"{lcs[-1][0]}/{lcs[-1][1]}" if lcs else None,
            "ram_blocks": f"{brams[-1][0]}/{brams[-1][1]}" if brams else None,
            "harness": "io_harness.v: serial-in shift chain + XOR-reduced output (counted)",
            "fmax_mhz": f, "clock_source": "nextpnr Fmax", "ops_per_cycle": _ops_per_cycle(cfg),
            "gops": gops, "gops_per_klut": 1e3 * gops / luts if gops and luts else None,
            "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    """Synthesize, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=DEFAULT_JSON)
    parser.add_argument("--quick", action="store_true",
                        help="the default configuration and the iCE40 run only")
    args = parser.parse_args(argv)
    missing = [t for t in ("yosys", "nextpnr-ice40") if shutil.which(t) is None]
    if missing:
        print(f"synth_accel: {', '.join(missing)} not installed (apt-get install yosys "
              "nextpnr-ice40)", file=sys.stderr)
        return 1
    base = AccelConfig.load()
    configs = [base] if args.quick else [base, base.replace(block_out=32),
                                         base.replace(block_in=128)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="synth_accel-") as work:
        for cfg in configs:
            rows.append(synth_xilinx(cfg, work))
            _print_row(rows[-1])
        rows.append(place_ice40(base.replace(block_out=4), 256, work))
        _print_row(rows[-1])
    print(f"note: {NOTE}")
    yosys = subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()
    out = {"note": NOTE, "tools": {"yosys": yosys}, "rows": rows, "published": PUBLISHED}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.json}")
    return 0


def _print_row(r: dict) -> None:
    if "lut" in r:
        print(f"{r['config']:>10} {r['target']:<12} LUT {r['lut']:>6} FF {r['ff']:>6} "
              f"CARRY4 {r['carry4']:>4} DSP {r['dsp']} BRAM36 {r['bram36']} BRAM18 "
              f"{r['bram18']}  {r['gops']:.1f} GOPS @ {r['clock_mhz']:.0f} MHz (assumed) "
              f"= {r['gops_per_klut']:.2f} GOPS/kLUT  [{r['seconds']} s]", flush=True)
    else:
        print(f"{r['config']:>10} {r['target']:<12} LUT4 {r['lut4']:>6} FF {r['ff']:>6} "
              f"EBR {r['ebr']}  Fmax {r['fmax_mhz']} MHz  {r['gops']:.1f} GOPS = "
              f"{r['gops_per_klut']:.2f} GOPS/kLUT  [{r['seconds']} s]", flush=True)


if __name__ == "__main__":
    sys.exit(main())
