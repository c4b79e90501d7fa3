# SPDX-License-Identifier: Apache-2.0
"""The kernel family as a tuning dimension: tune times each family a layer fits, keeps the
fastest in ``kernel_families.json``, and compile follows it (and only for that layer)."""

import json
import logging

import numpy as np
import pytest
import tvm

import tvm_qnn
from tvm_qnn.frontend import load_model
from tvm_qnn.pipeline import layer_report
from tvm_qnn.target import X86Target, resolve_target
from tvm_qnn.testing.onnx_models import make_conv_model, random_input
from tvm_qnn.topi.layout import KernelChoice
from tvm_qnn.transform import find_layers
from tvm_qnn.tuning.families import (
    FAMILIES_FILE,
    family_tasks,
    outclassed,
    read_kernel_families,
    write_kernel_families,
)
from tvm_qnn.tuning.tasks import Task

OTHER = {"bit-serial": "int8-dot", "int8-dot": "bit-serial"}


@pytest.fixture(scope="module")
def conv():
    # 64 channels fill a popcount word (fewer would weigh the layer onto the integer kernel):
    # a W2A2 conv fits both families on every x86 class with AVX2.
    return make_conv_model("qcdq", in_ch=64, out_ch=16, size=(8, 8), act_bits=2,
                           weight_bits=2)


def _layer(model):
    (match,) = [m for m in find_layers(load_model(model)["main"]) if m.layer is not None]
    return match


def test_a_choice_applies_to_the_layers_of_its_signature(conv):
    """layer_report (what compile logs and ``art.layers`` holds) follows a choice for the
    layer's signature, says who chose, and ignores one for another signature."""
    layout = X86Target().layout
    match = _layer(conv)
    (row,) = layer_report(load_model(conv), layout)
    assert row["kernel_choice"] == "cost model"
    flipped = OTHER[row["kernel"]]
    choice = KernelChoice(flipped, match.layer.signature, f"tuned: {flipped} 1 ms")
    (tuned,) = layer_report(load_model(conv), layout, {choice.signature: choice})
    assert tuned["kernel"] == flipped and tuned["kernel_choice"] == choice.why
    stale = KernelChoice(flipped, "conv2d 1x64x9x9->1x16x9x9 A2", "tuned: elsewhere")
    (kept,) = layer_report(load_model(conv), layout, {stale.signature: stale})
    assert kept["kernel"] == row["kernel"] and kept["kernel_choice"] == "cost model"


def test_the_families_file_is_read_back_and_a_bad_one_is_ignored(tmp_path, caplog):
    choice = KernelChoice("int8-dot", "sig", "tuned: int8-dot 0.5 ms, bit-serial 0.6 ms",
                          (("int8-dot", 0.5), ("bit-serial", 0.6)))
    write_kernel_families(str(tmp_path), {"conv_a": choice})
    # Another model's layer of the same name: both choices stay (keyed by signature).
    write_kernel_families(str(tmp_path), {"conv_a": KernelChoice("bit-serial", "s2", "w")})
    assert read_kernel_families(tmp_path) == {"sig": choice, "s2": KernelChoice(
        "bit-serial", "s2", "w")}  # merged with what was there
    # A file written keyed by layer name (before 2026-12-03) reads the same.
    old = tmp_path / "old"
    old.mkdir()
    (old / FAMILIES_FILE).write_text(json.dumps({"conv_a": {
        "family": "int8-dot", "signature": "sig", "why": choice.why}}))
    assert read_kernel_families(old) == {"sig": KernelChoice("int8-dot", "sig", choice.why)}
    assert read_kernel_families(None) == {} and read_kernel_families(tmp_path / "none") == {}
    (tmp_path / FAMILIES_FILE).write_text('{"conv_a": [1, 2]')
    with caplog.at_level(logging.WARNING, logger="tvm_qnn"):
        assert read_kernel_families(tmp_path) == {}
    assert "the cost model chooses every kernel family" in caplog.text


def _workload(op):
    from tvm import te

    a = te.placeholder((4,), "int32", "a")
    return tvm.IRModule({"main": te.create_prim_func([a, te.compute((4,), lambda i: op(a[i]))])})


def test_a_family_that_does_not_fit_a_layer_is_not_compared():
    """The lut variant lowers a layer it does not fit with the bit-serial kernel: that layer
    compares bit-serial and int8-dot only, the other all three."""
    plain, dot, lut = _workload(lambda x: x + 1), _workload(lambda x: x * 2), \
        _workload(lambda x: x - 3)
    variants = {"bit-serial": [Task("conv2d", "W2A2", plain, ["narrow", "wide"])],
                "int8-dot": [Task("conv2d", "W2A2", dot, ["narrow", "wide"])],
                "lut": [Task("conv2d", "W2A2", plain, ["narrow"]),
                        Task("conv2d", "W2A2", lut, ["wide"])]}
    compared = family_tasks(variants)
    assert list(compared["narrow"]) == ["bit-serial", "int8-dot"]
    assert list(compared["wide"]) == ["bit-serial", "int8-dot", "lut"]
    same = {"bit-serial": [Task("conv2d", "W1A1", plain, ["x"])],
            "lut": [Task("conv2d", "W1A1", plain, ["x"])]}
    assert family_tasks(same) == {}


def test_a_family_far_slower_than_another_is_not_searched():
    """A task is left out of the search only when its default is over SEARCH_MARGIN times
    another family's on every layer it serves; one without a record, or serving a layer with
    one kernel whatever the family, is searched."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    plain, dot, lut = _workload(lambda x: x + 1), _workload(lambda x: x * 2), \
        _workload(lambda x: x - 3)
    db = ms.database.MemoryDatabase()
    for mod, seconds in ((plain, 3.1e-3), (dot, 1.4e-3), (lut, 1e-3)):
        sch = s_tir.Schedule(mod)
        sch.get_sblock("compute")  # MemoryDatabase ranks no record of an empty trace
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, db.commit_workload(mod), [seconds],
            tvm.target.Target("llvm"), ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    serial, dotted, looked = (Task("conv2d", "W2A2", plain, ["a", "b"]),
                              Task("conv2d", "W2A2", dot, ["a", "b"]),
                              Task("conv2d", "W2A2", lut, ["a", "b"]))
    both = {"bit-serial": serial, "int8-dot": dotted, "lut": looked}
    skipped = outclassed([serial, dotted, looked], {"a": both, "b": both}, db)
    assert list(skipped) == [0]  # 3.1x the lookups; int8-dot at 1.4x is searched
    assert skipped[0].startswith("a: bit-serial kernel 3.1 ms, lut 1 ms; b:")
    # Where it serves a layer without a choice too, it is searched.
    assert outclassed([serial], {"a": both}, db) == {}
    # Against families without a record, nothing is known: searched.
    fresh = Task("conv2d", "W2A2", _workload(lambda x: x - 5), ["a"])
    assert outclassed([serial], {"a": {"bit-serial": serial, "lut": fresh}}, db) == {}
    assert outclassed([fresh], {"a": {"bit-serial": serial, "lut": fresh}}, db) == {}


@pytest.mark.slow
def test_tune_keeps_the_faster_family_and_compile_follows_it(conv, tmp_path):
    """Both families of the conv are tuned and timed; the file names the faster one with both
    times; compile with the folder uses it, exactly; a hand-flipped file is followed too."""
    if len(resolve_target("x86").kernel_families) < 2:
        pytest.skip("this CPU has one kernel family (no AVX2)")
    work = tmp_path / "db"
    tvm_qnn.tune(conv, "x86", trials=2, work_dir=work, seed=0)
    match = _layer(conv)
    saved = json.loads((work / FAMILIES_FILE).read_text())
    entry = saved[match.layer.signature]
    assert entry["signature"] == match.layer.signature
    times = entry["times_ms"]
    assert set(times) == {"bit-serial", "int8-dot"}, entry
    assert entry["family"] == min(times, key=times.get)
    assert entry["why"] == "tuned: " + ", ".join(
        f"{f} {ms:.3g} ms" for f, ms in sorted(times.items(), key=lambda kv: kv[1]))
    feeds = random_input(conv, seed=3)
    want = tvm_qnn.compile(conv, "x86").run(feeds)
    art = tvm_qnn.compile(conv, "x86", tuning_db=work)
    (row,) = [r for r in art.layers if r["bitserial"]]
    assert row["kernel"] == entry["family"] and row["kernel_choice"] == entry["why"]
    np.testing.assert_array_equal(art.run(feeds), want)
    # The other family, written by hand: followed, still exact, and tune_report agrees.
    flipped = OTHER[entry["family"]]
    write_kernel_families(str(work), [KernelChoice(flipped, match.layer.signature, "by hand")])
    art = tvm_qnn.compile(conv, "x86", tuning_db=work)
    (row,) = [r for r in art.layers if r["bitserial"]]
    assert row["kernel"] == flipped
    np.testing.assert_array_equal(art.run(feeds), want)
    (report,) = tvm_qnn.tune_report(conv, "x86", work, time_kernels=False)
    assert report.trials >= 1  # the flipped family's kernel was tuned too
