# SPDX-License-Identifier: Apache-2.0
"""A layer kernel's time split into input pack, branch kernel and epilogue
(``runtime/kernel_split.py``, ``Artifact.profile(split=True)``, ``tvm-qnn profile --split``)."""

import re

import onnx
import pytest
import tvm
from tvm.script import tirx as T

import tvm_qnn
from tvm_qnn import cli
from tvm_qnn.errors import TvmQnnError
from tvm_qnn.runtime.kernel_split import INPUT_STAGES, has_blocks, without_blocks
from tvm_qnn.testing.onnx_models import make_cnn_model, random_input


@T.prim_func(s_tir=True)
def _before(a: T.Buffer((8,), "int32"), out: T.Buffer((8,), "int32")):
    staged = T.sblock_alloc_buffer((8,), "int32")
    for i in range(8):
        with T.sblock("int_input"):
            vi = T.axis.spatial(8, i)
            staged[vi] = a[vi] + 1
    for i in range(8):
        with T.sblock("epilogue"):
            vi = T.axis.spatial(8, i)
            out[vi] = staged[vi] * 2


@T.prim_func(s_tir=True)
def _expected(a: T.Buffer((8,), "int32"), out: T.Buffer((8,), "int32"),
              staged: T.Buffer((8,), "int32")):
    for _i in range(8):
        T.evaluate(0)
    for i in range(8):
        with T.sblock("epilogue"):
            vi = T.axis.spatial(8, i)
            out[vi] = staged[vi] * 2


def test_a_stage_taken_out_leaves_its_buffer_as_a_parameter():
    """The input stage becomes a no-op and the buffer it wrote a parameter (its reads stay
    reads of real memory, which the compiler cannot fold away)."""
    after, extra = without_blocks(_before, INPUT_STAGES)
    tvm.ir.assert_structural_equal(after.without_attr("global_symbol"),
                                   _expected.without_attr("global_symbol"))
    assert extra == [((8,), "int32")]
    assert has_blocks(_before, INPUT_STAGES) and not has_blocks(after, INPUT_STAGES)


def test_profile_splits_each_layer_into_pack_kernel_and_epilogue():
    model = make_cnn_model("qcdq", bits=2)
    art = tvm_qnn.compile(model, target="x86")
    rows = art.profile(random_input(model), threads=1, split=True)
    layers = [r for r in rows if r["kind"] == "layer"]
    assert [r["layer"] for r in layers] == [r["name"] for r in art.layers if r["bitserial"]]
    for r in layers:
        parts = (r["pack_ms"], r["kernel_ms"], r["epilogue_ms"])
        assert min(parts) >= 0 and sum(parts) == pytest.approx(r["ms"]), r
    # The W2A2 convs spend most of their time summing branches.
    conv1 = next(r for r in layers if r["layer"] == "conv1")
    assert conv1["kernel_ms"] > conv1["epilogue_ms"], conv1
    assert all("kernel_ms" not in r for r in rows if r["kind"] != "layer")


def test_split_needs_the_kernels_of_a_model_compiled_here(tmp_path):
    model = make_cnn_model("qcdq", bits=2)
    art = tvm_qnn.compile(model, target="x86")
    art.export_library(tmp_path / "m.so")
    with pytest.raises(TvmQnnError, match="compiled in this process"):
        tvm_qnn.load(tmp_path / "m.so").profile(random_input(model), split=True)


def test_cli_profile_split_prints_the_parts(tmp_path, capsys):
    path = tmp_path / "cnn.onnx"
    onnx.save(make_cnn_model("qcdq", bits=1), path)
    assert cli.main(["profile", str(path), "--split", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^function\s+kind\s+layer\s+ms\s+pack\s+kernel\s+epilogue$", out, re.M)
    assert re.search(r"^layer kernels split: input packs [\d.]+, branch kernels [\d.]+, "
                     r"epilogues [\d.]+$", out, re.M), out
