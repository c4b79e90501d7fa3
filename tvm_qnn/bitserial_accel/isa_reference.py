# SPDX-License-Identifier: Apache-2.0
"""A numpy reference of the ISA's functional semantics, for testing the C++ simulator.

Runs the instructions in program order (dependency tokens only change timing for a program
whose tokens order every conflicting access) and computes the GEMM from unpacked bits:
``popcount(a xor w) = sum(a) + sum(w) - 2 sum(a*w)``, ``popcount(a and w) = sum(a*w)``, an
independent route to the same integers. No cycle model, few checks: slow and simple on purpose.
"""

from __future__ import annotations

import numpy as np

from .config import AccelConfig
from .isa import decode, isa_description


def run_reference(config: AccelConfig, program, dram: np.ndarray) -> np.ndarray:
    """The DRAM after ``program``, as the ISA text specifies; raises on what it cannot do."""
    cfg = config
    dram = np.array(dram, dtype=np.uint8, copy=True)
    mem = isa_description()["mem_types"]
    alu_ops = {v: k for k, v in isa_description()["alu_ops"].items()}
    # SRAMs as arrays of bits / ints, one row per entry.
    inp = np.zeros((cfg.inp_entries, cfg.batch, cfg.block_in), np.int64)
    wgt = np.zeros((cfg.wgt_entries, cfg.block_out, cfg.block_in), np.int64)
    acc = np.zeros((cfg.acc_entries, cfg.batch, cfg.block_out), np.int64)
    uop = np.zeros((cfg.uop_entries, 3), np.int64)
    entry_bytes = {mem["INP"]: cfg.inp_entry_bytes, mem["WGT"]: cfg.wgt_entry_bytes,
                   mem["ACC"]: cfg.acc_entry_bytes, mem["UOP"]: 8}

    def entry_from_bytes(kind, raw):
        if kind == mem["INP"] or kind == mem["WGT"]:
            rows = cfg.batch if kind == mem["INP"] else cfg.block_out
            return np.unpackbits(raw, bitorder="little").reshape(rows, cfg.block_in)
        if kind == mem["ACC"]:
            return raw.view("<i4").reshape(cfg.batch, cfg.block_out)
        w = int(raw.view("<u8")[0])
        return np.array([w & 0xFFFF, (w >> 16) & 0xFFFF, (w >> 32) & 0xFFFF])

    for insn in decode(program):
        op = insn["op"]
        if op == "LOAD":
            kind, planes = insn["mem_type"], insn["planes"]
            sram = {mem["INP"]: inp, mem["WGT"]: wgt, mem["ACC"]: acc, mem["UOP"]: uop}[kind]
            eb = entry_bytes[kind]
            yp0, yp1, xp0, xp1 = (insn[k] for k in ("y_pad_0", "y_pad_1", "x_pad_0", "x_pad_1"))
            row_elems = xp0 + insn["x_size"] + xp1
            dst = insn["sram_base"]
            for y in range(yp0 + insn["y_size"] + yp1):
                for x in range(row_elems):
                    sy, sx = y - yp0, x - xp0
                    for p in range(planes):
                        if 0 <= sy < insn["y_size"] and 0 <= sx < insn["x_size"]:
                            elem = sy * insn["x_stride"] + sx
                            at = (insn["dram_base"] + elem * planes + p) * eb
                            sram[dst] = entry_from_bytes(kind, dram[at:at + eb])
                        elif kind == mem["ACC"]:
                            code = insn["pad_code"] & 0xFF
                            sram[dst] = code - 256 if code >= 128 else code
                        else:
                            sram[dst] = (insn["pad_code"] >> p) & 1
                        dst += 1
        elif op == "STORE":
            nb = 1 << insn["out_bytes_log2"]
            dtype = {1: "<i1", 2: "<i2", 4: "<i4"}[nb]
            lanes = cfg.batch * cfg.block_out
            src = insn["sram_base"]
            for y in range(insn["y_size"]):
                vals = acc[src:src + insn["x_size"]].reshape(-1)
                src += insn["x_size"]
                # Keep the low bytes, two's complement.
                low = (vals & ((1 << (8 * nb)) - 1)).astype(np.uint64).astype(f"<u{nb}")
                at = (insn["dram_base"] + y * insn["x_stride"]) * lanes * nb
                dram[at:at + low.size * nb] = low.view(dtype).view(np.uint8)
        elif op in ("GEMM", "ALU"):
            for i0 in range(insn["iter_out"]):
                for i1 in range(insn["iter_in"]):
                    for u in range(insn["uop_bgn"], insn["uop_end"]):
                        a_idx, x_idx, w_idx = uop[u]
                        d = a_idx + i0 * insn["dst_factor_out"] + i1 * insn["dst_factor_in"]
                        s = x_idx + i0 * insn["src_factor_out"] + i1 * insn["src_factor_in"]
                        if op == "GEMM":
                            w = w_idx + i0 * insn["wgt_factor_out"] + i1 * insn["wgt_factor_in"]
                            if insn["reset"]:
                                acc[d] = 0
                                continue
                            for i in range(insn["a_bits"]):
                                a = inp[s + i]                        # [batch, block_in]
                                for j in range(insn["w_bits"]):
                                    b = wgt[w + j]                    # [block_out, block_in]
                                    both = a @ b.T
                                    pc = both if insn["mode"] == 1 else \
                                        a.sum(1)[:, None] + b.sum(1)[None, :] - 2 * both
                                    acc[d] += pc << (i + j)
                        else:
                            y = insn["imm"] if insn["use_imm"] else acc[s].copy()
                            acc[d] = _alu(alu_ops[insn["alu_op"]], acc[d], y)
                        acc[d] = _wrap32(acc[d])
    return dram


def _wrap32(x):
    return ((np.asarray(x, np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


def _alu(op: str, x: np.ndarray, y) -> np.ndarray:
    y = np.broadcast_to(np.asarray(y, np.int64), x.shape)
    if op == "MIN":
        return np.minimum(x, y)
    if op == "MAX":
        return np.maximum(x, y)
    if op == "ADD":
        return x + y
    if op == "MUL":
        return _wrap32(x * y)  # int64 products of int32 are exact, then wrap
    if op == "SHR":
        s = np.clip(y, -31, 31)
        return np.where(s >= 0, x >> np.maximum(s, 0), _wrap32(x << np.maximum(-s, 0)))
    return y.copy()  # MOV
