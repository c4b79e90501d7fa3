# SPDX-License-Identifier: Apache-2.0
"""Hostile input to ``compile``: a TvmQnnError or a correct answer, never a crash, never a
silent wrong answer, never a lost file (issue 16).

Mutated ONNX models and mutated tuning databases are compiled and run in a worker process
(:mod:`tvm_qnn.testing.fuzz`): a crash there fails the test instead of killing pytest. A model
onnxruntime accepts must give onnxruntime's answer (graph optimizations off; bit for bit, as
the base models use power-of-two scales); a database, the untuned model's answer. Every line of
a hostile database file must survive, in the file or in a ``.corrupt`` side file.

The counts of one run are printed at the end of the module (``-s`` shows them).
"""

from __future__ import annotations

import collections
import json
import os
import shutil

import numpy as np
import onnx
import pytest
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from tvm_qnn.frontend import load_model
from tvm_qnn.pipeline import lower_for_tuning
from tvm_qnn.target import X86Target
from tvm_qnn.target.cpu import ScheduleConfig
from tvm_qnn.testing.fuzz import (
    DB_MUTATIONS,
    MODEL_MUTATIONS,
    SPECIAL_VALUES,
    FuzzWorker,
    load_outputs,
    mutate_file,
    mutate_model,
)
from tvm_qnn.testing.onnx_models import make_conv_model, make_dense_model
from tvm_qnn.tuning import extract_tasks, open_database

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
COUNTS: collections.Counter = collections.Counter()
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _small_conv(form, **kw):
    return make_conv_model(form, in_ch=8, out_ch=8, size=(6, 6), weight_bits=2, **kw)


BASES = {  # small valid models: float QDQ / QCDQ outputs, and an integer one (int32 output)
    "qcdq_conv": lambda: _small_conv("qcdq", act_bits=2, relu=True),
    "qdq_dense": lambda: make_dense_model("qdq", in_features=32, out_features=8, weight_bits=2),
    "integer_conv": lambda: _small_conv("integer", act_bits=8),
}


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def worker(fuzz_dir):
    w = FuzzWorker(str(fuzz_dir / "worker.log"))
    yield w
    w.close()
    print(f"\nfuzz counts ({w.started} worker process(es)): "
          + ", ".join(f"{k}: {v}" for k, v in sorted(COUNTS.items()) if k[0] != "_"))


@pytest.fixture(scope="module")
def bases(fuzz_dir):
    paths = {}
    for name, build in BASES.items():
        paths[name] = str(fuzz_dir / f"{name}.onnx")
        onnx.save(build(), paths[name])
    return paths


def _case_path(fuzz_dir, stem: str) -> str:
    COUNTS["_n"] += 1
    return str(fuzz_dir / f"{stem}{COUNTS['_n']}")


def _difference(ours: list, ref: list) -> tuple[str | None, bool]:
    """(why ``ours`` is not ``ref``, or None; whether it is exact). Float outputs may be one
    output code off where the reference is not exact: with scales that are not powers of two
    onnxruntime's float conv rounds its partial sums (tvm_qnn's integer accumulator does not;
    ``test_compiler.test_non_power_of_two_scales_match_the_reference_within_one_code``).
    Integer outputs, NaN and infinities must match exactly."""
    if len(ours) != len(ref):
        return f"{len(ours)} outputs, expected {len(ref)}", False
    exact = True
    for k, (a, b) in enumerate(zip(ours, ref, strict=True)):
        if a.shape != b.shape or a.dtype != b.dtype:
            return (f"output {k}: {a.dtype}{list(a.shape)}, expected {b.dtype}{list(b.shape)}",
                    False)
        floating = np.issubdtype(a.dtype, np.floating)
        if np.array_equal(a, b, equal_nan=floating):
            continue
        exact = False
        bad = ~((a == b) | (np.isnan(a) & np.isnan(b))) if floating else a != b
        why = (f"output {k}: {int(bad.sum())} of {a.size} values differ, e.g. "
               f"{a[bad].reshape(-1)[:3]} for {b[bad].reshape(-1)[:3]}")
        codes = np.unique(b[np.isfinite(b)]) if floating else np.array([])
        if codes.size < 2 or not np.isfinite(a[bad]).all() or not np.isfinite(b[bad]).all():
            return why, False
        code = float(np.min(np.diff(codes)))
        if np.max(np.abs(a[bad].astype(np.float64) - b[bad])) > code * 1.0001:
            return why, False
    return None, exact


def _judge(answers: list[dict], expected=None, out: str = "") -> str | None:
    """Count the worker's answers; a failure message when they break the contract."""
    COUNTS["cases"] += 1
    last = answers[-1]
    if "died" in last:
        if last["died"] == "ref":  # onnxruntime's crash, after ours answered
            COUNTS["onnxruntime crashed (not ours)"] += 1
            return None
        COUNTS["crashes"] += 1
        return f"the worker died ({last}): a crash or a hang"
    tvm = answers[0]
    if tvm["outcome"] == "error":
        COUNTS["clear errors"] += 1
        return None
    if tvm["outcome"] == "exception":
        COUNTS["other exceptions"] += 1
        return f"not a TvmQnnError: {tvm['type']}\n{tvm['message']}"
    if expected is None:
        if answers[1]["outcome"] == "refused":
            COUNTS["answers onnxruntime refused to check"] += 1
            return None
        expected = load_outputs(out + ".ref.npz")
    why, exact = _difference(load_outputs(out + ".tvm.npz"), expected)
    if why:
        COUNTS["silent wrong answers"] += 1
        return f"a wrong answer: {why}"
    COUNTS["correct answers" if exact else "correct answers, some one code off"] += 1
    return None


_NUMBER = st.one_of(st.sampled_from(SPECIAL_VALUES), st.floats(width=32),
                    st.integers(-(2**40), 2**40).map(float))
_MODEL_MUTATION = st.tuples(st.sampled_from(MODEL_MUTATIONS), st.integers(0, 999),
                            st.integers(0, 999), _NUMBER)


@settings(FUZZ, max_examples=examples(48))
@given(base=st.sampled_from(sorted(BASES)), mutations=st.lists(_MODEL_MUTATION, min_size=1,
                                                               max_size=3),
       cut=st.one_of(st.none(), st.none(), st.integers(0, 4000)))
def test_a_mutated_onnx_model_is_a_clear_error_or_onnxruntimes_answer(worker, fuzz_dir, bases,
                                                                       base, mutations, cut):
    model = onnx.load(bases[base])
    for op, a, b, x in mutations:
        mutate_model(model, op, a, b, x)
    data = model.SerializeToString()
    if cut is not None:  # a file cut short
        data = data[:cut % (len(data) + 1)]
    out = _case_path(fuzz_dir, "model")
    with open(out + ".onnx", "wb") as f:
        f.write(data)
    answers = worker.ask({"kind": "onnx", "model": out + ".onnx", "base": bases[base],
                          "out": out})
    why = _judge(answers, out=out)
    assert why is None, f"{base} {mutations} cut={cut}: {why}"


@pytest.fixture(scope="module")
def tuned(fuzz_dir, bases, worker):
    """A tuning database of the qcdq conv as a tune writes it (the default template and three
    register tiles, with run times), and the untuned model's answer."""
    model = bases["qcdq_conv"]
    target = X86Target()
    (task,) = extract_tasks(lower_for_tuning(load_model(model), target))
    folder = fuzz_dir / "db"
    db = open_database(folder, create=True)
    for tile, secs in [(None, 3e-5), (1, 2e-5), (2, 1e-5), (3, 4e-5)]:
        sch = s_tir.Schedule(task.mod)
        (target if tile is None
         else X86Target(schedule_config=ScheduleConfig(ow_tile=tile))).template(task.kind)(sch)
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, db.commit_workload(task.mod), [secs] * 3, target.tvm_target,
            ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))
    out = _case_path(fuzz_dir, "untuned")
    (answer,) = worker.ask({"kind": "db", "model": model, "db": None, "out": out})
    assert answer["outcome"] == "ok", answer
    return model, str(folder), load_outputs(out + ".tvm.npz")


def _lines(data: bytes, records: bool) -> list:
    """A file's lines as the repair splits them; a record line by its record (a set-aside
    workload renumbers the records after it)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not records:
        return lines
    keyed = []
    for line in lines:
        try:
            value = json.loads(line)
            keyed.append(json.dumps(value[1]) if isinstance(value, list) and len(value) == 2
                         and type(value[0]) is int else line)  # noqa: E721
        except (ValueError, TypeError):
            keyed.append(line)
    return keyed


def _lost_lines(folder: str, hostile: dict) -> list:
    """Lines of the hostile files found neither in the file nor in its side files."""
    lost = []
    for name, data in hostile.items():
        now = collections.Counter()
        for entry in os.listdir(folder):
            if entry == name or entry.startswith(name + ".corrupt"):
                with open(os.path.join(folder, entry), "rb") as f:
                    now.update(_lines(f.read(), name == RECORDS))
        missing = collections.Counter(_lines(data, name == RECORDS)) - now
        lost += [(name, line) for line in missing.elements()]
    return lost


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
_DB_MUTATION = st.tuples(st.sampled_from([WORKLOADS, RECORDS]), st.sampled_from(DB_MUTATIONS),
                         st.integers(0, 10**5), st.integers(0, 10**5), st.binary(max_size=48),
                         st.one_of(_JSON, _NUMBER, st.integers(-(2**63), 2**64)))


@settings(FUZZ, max_examples=examples(24))
@given(mutations=st.lists(_DB_MUTATION, min_size=1, max_size=3))
def test_a_mutated_tuning_database_is_a_clear_error_or_the_untuned_answer(worker, fuzz_dir,
                                                                          tuned, mutations):
    model, source, untuned = tuned
    out = _case_path(fuzz_dir, "db")
    shutil.copytree(source, out)
    for name, op, a, b, data, value in mutations:
        mutate_file(os.path.join(out, name), op, a, b, data, value)
    hostile = {}
    for name in (WORKLOADS, RECORDS):
        if os.path.exists(os.path.join(out, name)):
            with open(os.path.join(out, name), "rb") as f:
                hostile[name] = f.read()
    answers = worker.ask({"kind": "db", "model": model, "db": out, "out": out})
    why = _judge(answers, expected=untuned, out=out)
    lost = _lost_lines(out, hostile)
    if lost:
        COUNTS["files with lost lines"] += 1
    assert why is None, f"{mutations}: {why}"
    assert not lost, f"{mutations}: lines lost: {lost[:3]}"
