"""Choosing convolution kernels by measurement (``scratchnet.kernels.tuning``).

* Every candidate the tuner may pick computes the convolution: each algorithm and chunk
  size of every pass, at representative shapes, against the NumPy reference in float64 and
  float32 (``test_kernels``'s tolerances), plus each algorithm with tiny chunks (many
  ragged chunks per worker). Whatever a machine measures, results stay inside them.
* The cache: a round trip; another machine's file is not used; a corrupt file is ignored
  with one warning line; an unwritable folder keeps the measurements in memory; the
  dispatch follows a measurement, "direct" still excludes Winograd, "untuned" ignores it;
  without a measurement the built-in rules run.

Every test runs on its own store (memory or tmp_path): a cache the machine already has is
never read, and nothing here times anything except ``tune`` at tiny shapes.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

import scratchnet.kernels as fast
import scratchnet.ops as ref
from scratchnet.kernels import conv, tuning
from scratchnet.kernels.blocked import VARIANTS as BLOCKED
from scratchnet.kernels.lanes import applies as lanes_apply
from scratchnet.kernels.winograd import winograd_applies
from scratchnet.kernels.tuning import PASSES, Choice, Store, candidates, conv_key, key_text, runner
from scratchnet.ops.conv import spatial_geometry

from commandline import COMMAND, ENV, assert_fails, scratchnet
from test_kernels import DTYPES, close, rand


@pytest.fixture(autouse=True)
def empty_store(monkeypatch):
    """A fresh in-memory store for every test (the machine's own cache is never read)."""
    st = Store(None)
    monkeypatch.setattr(tuning, "_store", st)
    monkeypatch.setattr(tuning, "TUNE_AT_FIRST_USE", False)
    return st


def setup(case, dtype):
    n, h, w_, c, kh, kw, f, stride, padding = case
    rng = np.random.default_rng(11)
    x, w, b = rand(rng, (n, h, w_, c), dtype), rand(rng, (kh, kw, c, f), dtype), rand(rng, (f,), dtype)
    y0, c0 = ref.conv2d_forward(x, w, b, stride, padding)
    dy = rand(rng, y0.shape, dtype)
    dx0, dw0, _ = ref.conv2d_backward(dy, c0)
    out_hw, pads = spatial_geometry(x.shape, (kh, kw), (stride, stride), padding)
    key = conv_key(x.shape, w.shape, stride, pads, dtype)
    return key, (x, w, b, dy, (x, w, stride, out_hw, pads)), {"fwd": (y0,), "dx": (dx0,), "dw": (dw0,),
                                                              "bwd": (dx0, dw0)}


def check_candidates(case, dtype, expect=()):
    """Every candidate of every pass, and each algorithm with tiny chunks, against the reference;
    ``expect``: algorithms that must be among the candidates."""
    key, arrays, want = setup(case, dtype)
    seen = set()
    for pass_ in PASSES:
        choices = candidates(pass_, key)
        tiny = {Choice(c.algorithm, 1 if c.algorithm in ("wide", "winograd", "winograd4", *BLOCKED, "lanes") else 37)
                for c in choices}
        choices += sorted(tiny) + ([Choice("split")] if pass_ == "bwd" else [])
        for choice in choices:
            got = runner(pass_, choice, key, arrays)()
            for name, g, r in zip(("dx", "dw") if pass_ == "bwd" else (pass_,), got if pass_ == "bwd" else (got,),
                                  want[pass_]):
                close(g, r, dtype, f"{pass_} {choice}: {name}")
            seen.add(choice.algorithm)
    assert set(expect) <= seen, f"{set(expect) - seen} not among the candidates"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
class TestEveryCandidate:
    def test_thin_first_layer(self, dtype): check_candidates((3, 28, 28, 1, 6, 6, 6, 1, "SAME"), dtype, ["wide", "im2col-t", "flipped"])  # noqa: E704
    def test_deep_cnn_conv1(self, dtype): check_candidates((2, 28, 28, 1, 5, 5, 32, 1, "SAME"), dtype, ["wide", "col2im"])  # noqa: E704
    def test_lanes_three_vectors_ragged_row(self, dtype): check_candidates((2, 11, 10, 8, 3, 3, 96, 1, "SAME"), dtype)  # noqa: E704
    def test_lanes_stride3_valid(self, dtype): check_candidates((2, 13, 9, 12, 4, 4, 32, 3, "VALID"), dtype)  # noqa: E704
    def test_stride2_thin(self, dtype): check_candidates((3, 28, 28, 6, 5, 5, 12, 2, "SAME"), dtype, ["wide", "im2col-t"] + (["lanes"] if dtype == np.float32 else []))  # noqa: E704
    def test_stride2_even_kernel(self, dtype): check_candidates((3, 14, 14, 12, 4, 4, 24, 2, "SAME"), dtype, ["wide", "winograd", "winograd4"])  # noqa: E704
    def test_stride2_wide_channels(self, dtype): check_candidates((2, 28, 28, 24, 5, 5, 48, 2, "SAME"), dtype, ["winograd", "winograd4"] + (["lanes"] if dtype == np.float32 else []))  # noqa: E704
    def test_winograd_stride2_odd_valid(self, dtype): check_candidates((2, 13, 11, 9, 5, 5, 8, 2, "VALID"), dtype, ["winograd", "winograd4"])  # noqa: E704
    def test_winograd_deep_cnn_conv2(self, dtype): check_candidates((3, 14, 14, 32, 5, 5, 64, 1, "SAME"), dtype, ["winograd", "winograd4", "flipped-t"])  # noqa: E704
    def test_winograd_odd_valid(self, dtype): check_candidates((2, 9, 11, 16, 5, 5, 16, 1, "VALID"), dtype, ["winograd", "winograd4", "wide"])  # noqa: E704
    def test_winograd_narrowest(self, dtype): check_candidates((5, 13, 14, 8, 5, 5, 8, 1, "SAME"), dtype, ["winograd", "winograd4"])  # noqa: E704
    def test_flipped_even_kernel(self, dtype): check_candidates((3, 14, 14, 6, 6, 6, 5, 1, "SAME"), dtype, ["flipped"])  # noqa: E704
    def test_non_square_valid(self, dtype): check_candidates((2, 9, 8, 5, 3, 3, 4, 2, "VALID"), dtype)  # noqa: E704
    def test_wide_c4_non_square(self, dtype): check_candidates((4, 9, 7, 4, 2, 5, 3, 1, "SAME"), dtype, ["wide"])  # noqa: E704
    def test_stride3_narrow_odd(self, dtype): check_candidates((2, 11, 10, 3, 4, 4, 7, 3, "SAME"), dtype, BLOCKED if dtype == np.float32 else [])  # noqa: E704
    def test_batch_one(self, dtype): check_candidates((1, 5, 5, 1, 3, 3, 2, 1, "SAME"), dtype)  # noqa: E704


# --- the dispatch -----------------------------------------------------------------------------------

DEEP2 = (3, 14, 14, 32, 5, 5, 64, 1, "SAME")
CONV3_2 = (3, 28, 28, 6, 5, 5, 12, 2, "SAME")


def fake_entry(st, pass_, key, fastest: str, ms: float = 0.5):
    """A measurement in which ``fastest`` wins and every other candidate takes 1 ms."""
    times = {str(c): 1.0 for c in candidates(pass_, key)}
    st.put(key_text(pass_, key), {"ms": {**times, fastest: ms}, "repeats": 1})


def test_without_measurements_the_builtin_rules_run():
    builtin = {DEEP2: ("winograd", "winograd", "winograd", "winograd"), CONV3_2: ("im2col", "col2im", "im2col", "split"),
               (3, 28, 28, 1, 6, 6, 6, 1, "SAME"): ("wide", "col2im", "wide", "split"),
               (3, 14, 14, 6, 6, 6, 5, 1, "SAME"): ("im2col", "flipped", "im2col", "split")}
    for case, algorithms in builtin.items():
        key = setup(case, np.float32)[0]
        assert tuple(conv.choose(p, key).algorithm for p in PASSES) == algorithms, case
    with fast.conv_algorithm("direct"):
        assert conv.choose("fwd", setup(DEEP2, np.float32)[0]) == Choice("im2col")


def test_dispatch_follows_the_measurement(empty_store):
    key, (x, w, b, dy, _), want = setup(CONV3_2, np.float32)
    for pass_, fastest in (("fwd", "im2col-t/37"), ("dx", "col2im/64"), ("dw", "wide/1")):
        fake_entry(empty_store, pass_, key, fastest)
        assert conv.choose(pass_, key) == Choice.parse(fastest)
    y, c1 = fast.conv2d_forward(x, w, b, CONV3_2[7], CONV3_2[8])
    close(y, want["fwd"][0], np.float32, "y")
    dx, dw, _ = fast.conv2d_backward(dy, c1)
    close(dx, want["dx"][0], np.float32, "dx")
    close(dw, want["dw"][0], np.float32, "dw")
    with fast.conv_algorithm("untuned"):
        assert conv.choose("fwd", key) == Choice("im2col")


def test_builtin_choice_stays_within_the_margin(empty_store):
    key = setup(CONV3_2, np.float32)[0]
    default = str(tuning.resolved("fwd", Choice("im2col"), key))
    fake_entry(empty_store, "fwd", key, "im2col-t/37", ms=0.99)
    empty_store.entries[key_text("fwd", key)]["ms"][default] = 1.0
    empty_store.memo.clear()
    assert conv.choose("fwd", key) == Choice.parse(default)  # 1 % faster is noise


def test_direct_excludes_a_measured_winograd(empty_store):
    key, (x, w, b, _, _), want = setup(DEEP2, np.float32)
    for pass_ in ("fwd", "dx", "dw", "bwd"):
        fake_entry(empty_store, pass_, key, "winograd/1", ms=0.1)
    assert conv.choose("bwd", key) == Choice("winograd", 1)
    with fast.conv_algorithm("direct"):
        assert conv.choose("fwd", key).algorithm == "im2col"
        assert conv.choose("bwd", key) == Choice("split")
        plan = tuning.conv_plan("deep-cnn", 3)  # its conv2 is DEEP2
        assert plan[2].source == "measured" and all(r.choice.algorithm != "winograd" for r in plan)
        y, _ = fast.conv2d_forward(x, w, b, 1, "SAME")
        close(y, want["fwd"][0], np.float32, "y")


def test_first_use_tuning_is_opt_in(monkeypatch, empty_store):
    key, (x, w, b, _, _), want = setup(CONV3_2, np.float32)
    fast.conv2d_forward(x, w, b, 2, "SAME")
    assert not empty_store.entries  # off by default
    monkeypatch.setattr(tuning, "TUNE_AT_FIRST_USE", True)
    monkeypatch.setattr(tuning, "REPEATS", 1)
    y, _ = fast.conv2d_forward(x, w, b, 2, "SAME")
    assert list(empty_store.entries) == [key_text("fwd", key)]
    close(y, want["fwd"][0], np.float32, "y")


def test_first_use_tuning_that_fails_falls_back(monkeypatch, empty_store, capsys):
    def no_memory(*args, **kwargs):
        raise MemoryError("no room")
    monkeypatch.setattr(tuning, "TUNE_AT_FIRST_USE", True)
    monkeypatch.setattr(tuning, "time_candidates", no_memory)
    key, (x, w, b, _, _), want = setup(CONV3_2, np.float32)
    close(fast.conv2d_forward(x, w, b, 2, "SAME")[0], want["fwd"][0], np.float32, "y")
    assert conv.choose("fwd", key) == Choice("im2col") and not empty_store.entries
    one_line_warning(capsys, "failed (MemoryError: no room); the built-in choice runs")


def test_conv_plan_names_each_layer_and_pass():
    rows = tuning.conv_plan("deep-cnn", 50)
    assert [(r.layer, r.pass_) for r in rows] == [("conv1", "fwd"), ("conv1", "dw"), ("conv2", "fwd"),
                                                  ("conv2", "dx"), ("conv2", "dw"),
                                                  ("fc1", "fwd"), ("fc1", "dx"), ("fc1", "dw")]
    assert [str(r.choice) for r in rows] == ["wide", "wide", "winograd", "winograd", "winograd",
                                             "blas", "blas-t", "blas"]
    assert rows[3].joint and all(r.source == "built-in" for r in rows)
    assert [r.pass_ for r in tuning.conv_plan("conv3", 1000, training=False)] == ["fwd"] * 3
    assert tuning.plan_text(rows) == ("conv1 fwd wide, dw wide; conv2 fwd winograd, dx winograd+, dw winograd+; "
                                      "fc1 fwd blas, dx blas-t, dw blas")
    assert tuning.conv_plan("mlp", 100) == []
    assert tuning.choice_for("bwd", (50, 14, 14, 32), (5, 5, 32, 64)) == Choice("winograd")
    assert tuning.choice_for("dx", (50, 28, 28, 6), (5, 5, 6, 12), stride=2) == Choice("col2im")


# --- dense layers ----------------------------------------------------------------------------------

BIG_DENSE = (10, 1024, 1024)  # rows, in, out: 1 M weights, where the choices begin


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_every_dense_candidate_computes_the_product(dtype):
    m, k, n = BIG_DENSE
    key = tuning.dense_key(m, (k, n), dtype)
    x, w, dy = arrays = tuning._arrays(key)
    want = {"dense-fwd": x @ w, "dense-dx": dy @ w.T, "dense-dw": x.T @ dy}
    for pass_, product in want.items():
        names = {c.algorithm for c in candidates(pass_, key)}
        expected = ({"blas"} | ({"blas-t"} if pass_ == "dense-dx" else set())
                    | ({"skinny"} if dtype == np.float32 else set()))
        assert names == (expected if len(expected) > 1 else set()), pass_  # float64 fwd, dw: only blas
        for choice in candidates(pass_, key):
            close(runner(pass_, choice, key, arrays)(), product, dtype, f"{pass_} {choice}")
    assert not candidates("dense-fwd", tuning.dense_key(1000, (k, n), dtype))  # only blas: nothing to measure
    assert not candidates("dense-dx", tuning.dense_key(m, (784, 200), dtype))  # a small weight always runs blas


def test_dense_layers_follow_a_measurement_and_their_rules_without(empty_store, monkeypatch):
    from scratchnet.kernels import dense, skinny
    m, k, n = BIG_DENSE
    rng = np.random.default_rng(5)
    x, w, b, dy = (rand(rng, s, np.float32) for s in ((m, k), (k, n), (n,), (m, n)))
    key = tuning.dense_key(m, w.shape, np.float32)
    monkeypatch.setattr(skinny, "AVX512", True)
    assert [dense.choose(p, m, w) for p in ("dense-fwd", "dense-dx", "dense-dw")] == ["blas", "blas-t", "skinny"]
    monkeypatch.setattr(skinny, "AVX512", False)
    empty_store.memo.clear()
    assert dense.choose("dense-dw", m, w) == "blas"  # 24 vector accumulators need AVX-512's registers
    for pass_, fastest in (("dense-fwd", "skinny"), ("dense-dx", "skinny"), ("dense-dw", "skinny")):
        fake_entry(empty_store, pass_, key, fastest)
        assert dense.choose(pass_, m, w) == "skinny"
    y, cache = fast.dense_forward(x, w, b)
    close(y, (x @ w + b), np.float32, "y")
    for name, got, product in zip(("dx", "dw"), fast.dense_backward(dy, cache), (dy @ w.T, x.T @ dy)):
        close(got, product, np.float32, name)
    with fast.conv_algorithm("untuned"):
        assert dense.choose("dense-fwd", m, w) == "blas"
    assert dense.choose("dense-fwd", m, np.asfortranarray(w)) == "blas"  # skinny reads w as C-ordered rows
    assert dense.choose("dense-fwd", m, np.zeros((784, 200), np.float32)) == "blas"
    assert tuning.plan_text(tuning.conv_plan("deep-cnn-glorot-10k", m)).endswith("fc1 fwd blas, dx blas-t, dw blas")


def test_a_dense_entry_round_trips_through_the_cache_file(tmp_path):
    key = tuning.dense_key(*BIG_DENSE[:1], BIG_DENSE[1:], np.float32)
    path = tmp_path / "conv.json"
    st = Store(path, machine())
    tuning.tune("dense-dx", key, repeats=1, into=st)
    assert set(Store(path, machine()).entries["dense-dx 10x1024x1024 float32"]["ms"]) == {"blas", "blas-t", "skinny"}


# --- the cache file -----------------------------------------------------------------------------------

SMALL = (2, 8, 8, 3, 3, 3, 4, 1, "SAME")


def machine(cpu="test CPU"):
    return {**tuning.machine(), "cpu": cpu}


def one_line_warning(capsys, *words):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scratchnet: warning: "), err
    assert "Traceback" not in err and all(w in err for w in words), err


def test_cache_round_trip(tmp_path):
    key = setup(SMALL, np.float32)[0]
    path = tmp_path / "conv.json"
    st = Store(path, machine())
    tuning.tune("bwd", key, repeats=1, into=st)  # also dx and dw
    tuning.tune("fwd", key, repeats=1, into=st)
    assert set(st.entries) == {key_text(p, key) for p in ("fwd", "dx", "dw", "bwd")}
    assert set(st.entries[key_text("fwd", key)]["ms"]) == {str(c) for c in candidates("fwd", key)}
    again = Store(path, machine())
    assert again.entries == st.entries
    assert tuning.pick("dx", key, st=again) == tuning.pick("dx", key, st=st)
    assert json.loads(path.read_text())["machine"] == machine()
    assert [p.name for p in tmp_path.iterdir()] == ["conv.json"]  # no temporary file left


def test_another_machines_cache_is_not_used(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCRATCHNET_TUNING_DIR", str(tmp_path))
    a, b = machine("CPU A"), {**machine("CPU B"), "numpy": "0.0"}
    key = setup(SMALL, np.float32)[0]
    tuning.tune("fwd", key, repeats=1, into=Store(tuning.cache_path(a), a))
    assert tuning.cache_path(a) != tuning.cache_path(b)
    assert Store(tuning.cache_path(b), b).entries == {}  # named by the machine: B never opens A's file
    shutil.copy(tuning.cache_path(a), tuning.cache_path(b))  # and A's file under B's name is refused
    assert Store(tuning.cache_path(b), b).entries == {}
    one_line_warning(capsys, "another machine", "cpu, numpy differ")
    assert Store(tuning.cache_path(a), a).entries  # A still reads its own


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "", "bad-time", "old-format"])
def test_corrupt_cache_is_ignored_with_one_warning(tmp_path, capsys, content):
    path = tmp_path / "conv.json"
    if content in ("bad-time", "old-format"):
        content = json.dumps({"format": tuning.FORMAT - (content == "old-format"), "machine": machine(),
                              "entries": {"fwd x": {"ms": {"im2col/8": "fast" if content == "bad-time" else 1.0}}}})
    path.write_text(content)
    st = Store(path, machine())
    assert st.entries == {}
    one_line_warning(capsys, str(path))
    tuning.tune("fwd", setup(SMALL, np.float32)[0], repeats=1, into=st)  # the next measurement rewrites it
    assert Store(path, machine()).entries == st.entries


def test_corrupt_cache_in_the_real_dispatch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCRATCHNET_TUNING_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "_store", None)
    tuning.cache_path(tuning.machine()).write_text("\x00\x01 not a tuning file")
    _, (x, w, b, _, _), want = setup(CONV3_2, np.float32)
    for _ in range(2):
        y, _ = fast.conv2d_forward(x, w, b, 2, "SAME")
        close(y, want["fwd"][0], np.float32, "y")
    one_line_warning(capsys, "not a tuning file")


def test_unwritable_folder_keeps_measurements_in_memory(tmp_path, capsys):
    (tmp_path / "file").write_text("")  # a file where the folder should be: unwritable even as root
    st = Store(tmp_path / "file" / "tuning" / "conv.json", machine())
    key = setup(SMALL, np.float32)[0]
    tuning.tune("fwd", key, repeats=1, into=st)
    assert st.path is None and key_text("fwd", key) in st.entries
    one_line_warning(capsys, "cannot write", "in memory")
    assert tuning.pick("fwd", key, st=st) is not None


# --- the command ----------------------------------------------------------------------------------------

def test_tune_command_prints_and_caches(tmp_path):
    env = {**ENV, "SCRATCHNET_TUNING_DIR": str(tmp_path)}
    result = subprocess.run(COMMAND + ["tune", "conv3-small", "mlp", "--batch-size", "2", "--eval-batch", "3",
                                       "--repeats", "1"], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    rows = [l.split()[:4] for l in result.stdout.splitlines()]
    assert ["conv3-small", "conv2", "2", "dx"] in rows and ["conv3-small", "conv1", "3", "fwd"] in rows, result.stdout
    assert ["mlp", "(nothing", "to", "tune)"] in rows, result.stdout
    assert "one training step and evaluation of each recipe run once" in result.stdout, result.stdout
    (cache,) = tmp_path.glob("conv-*.json")
    # training: conv1 fwd, dw; conv2 fwd, dw, dx; conv3 (4 × 4, stride 2, 8 → 12: Winograd
    # applies) fwd, dw, dx, bwd. Evaluation: 3 × fwd
    assert len(json.loads(cache.read_text())["entries"]) == 2 + 3 + 4 + 3


def test_tune_command_without_evaluation_batches(tmp_path):
    """``--eval-batch 0``: the training step's layers only, and that step run once."""
    env = {**ENV, "SCRATCHNET_TUNING_DIR": str(tmp_path)}
    result = subprocess.run(COMMAND + ["tune", "conv3-small", "--batch-size", "2", "--eval-batch", "0", "--repeats", "1"],
                            capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "one training step and evaluation of each recipe run once" in result.stdout, result.stdout
    (cache,) = tmp_path.glob("conv-*.json")
    assert len(json.loads(cache.read_text())["entries"]) == 2 + 3 + 4  # conv1 fwd, dw; conv2 fwd, dw, dx; conv3 + bwd


def test_tune_command_refuses_an_unknown_recipe(tmp_path):
    assert_fails(scratchnet("tune", "conv4", cwd=tmp_path), 2, "tune: unknown recipe 'conv4'")
    assert_fails(scratchnet("tune", "--repeats", "0", cwd=tmp_path), 2, "--repeats must be at least 1, got 0")


def test_the_register_blocked_kernels_are_float32_candidates_only():
    """``blocked`` and ``blocked16`` (forward, filter gradient, and input gradient where the
    stride's phases of ⌈C/4⌉·4 channels fit 16 rows) and ``lanes`` (forward for F ≥ 8, input gradient for
    C ≥ 4, filter gradient for F ≥ 8 where C has a divisor 4-12 that fits the register
    block: not C = 4 with two vectors of F) hold 16 float32 lanes per register: timed (and
    pinned above) in float32, never offered in float64."""
    for dtype, offered in ((np.float32, True), (np.float64, False)):
        key, _, _ = setup((2, 28, 28, 6, 5, 5, 12, 2, "SAME"), dtype)
        for pass_ in ("fwd", "dw", "dx"):
            assert (set(BLOCKED) <= {c.algorithm for c in candidates(pass_, key)}) is offered
        assert not set(BLOCKED) & {c.algorithm for c in candidates("bwd", key)}
        for c, stride, fits in ((4, 3, True), (5, 3, False), (8, 2, True), (9, 2, False), (16, 1, True), (17, 1, False)):
            key, _, _ = setup((2, 14, 14, c, 3, 3, 8, stride, "SAME"), dtype)
            assert (set(BLOCKED) <= {c.algorithm for c in candidates("dx", key)}) is (offered and fits)
        for c, f in ((8, 32), (8, 48), (12, 64), (16, 96), (4, 32), (8, 24), (8, 40), (6, 12), (4, 6)):
            key, _, _ = setup((2, 14, 14, c, 3, 3, f, 1, "SAME"), dtype)
            assert ("lanes" in {c.algorithm for c in candidates("fwd", key)}) is (offered and f >= 8)
            assert ("lanes" in {c.algorithm for c in candidates("dw", key)}) is (offered and c != 4 and f >= 8)
            assert ("lanes" in {c.algorithm for c in candidates("dx", key)}) is (offered and c >= 4)
            assert "lanes" not in {c.algorithm for c in candidates("bwd", key)}


def test_the_register_blocked_kernels_never_read_stale_scratch(monkeypatch):
    """The blocked kernels read past an image's planes (into rows whose products are
    dropped, or multiplied by dY's zero tail), the lanes kernels past a row's last output
    pixel: with every scratch buffer full of NaN first, the results must still equal the
    reference (0 · NaN would not)."""
    from scratchnet.kernels import _runtime, blocked, lanes

    def stale(slot, shape, dtype):
        buf = _runtime.scratch(slot, shape, dtype)
        buf[...] = np.nan
        return buf

    monkeypatch.setattr(blocked, "scratch", stale)
    monkeypatch.setattr(lanes, "scratch", stale)
    for case in ((4, 9, 7, 4, 2, 5, 3, 1, "SAME"), (3, 28, 28, 6, 5, 5, 12, 2, "SAME"), (3, 9, 10, 8, 3, 3, 32, 2, "SAME")):
        key, arrays, want = setup(case, np.float32)
        for pass_ in ("fwd", "dx", "dw"):
            for algorithm in {c.algorithm for c in candidates(pass_, key)} & {*BLOCKED, "lanes"}:
                for choice in (Choice(algorithm), Choice(algorithm, 1), Choice(algorithm, 116)):
                    close(runner(pass_, choice, key, arrays)(), want[pass_][0], np.float32, f"{pass_} {choice}")


FUSED_CASES = [(3, 28, 28, 1, 5, 5, 32, 1, "SAME"), (2, 28, 28, 1, 6, 6, 24, 1, "SAME"), (3, 28, 28, 1, 6, 6, 6, 1, "SAME"),
               (2, 12, 10, 3, 3, 3, 17, 1, "VALID"), (3, 14, 14, 12, 4, 4, 24, 2, "SAME"), (2, 9, 7, 4, 2, 5, 16, 1, "SAME"),
               DEEP2, (2, 9, 11, 16, 5, 5, 16, 1, "VALID"), (2, 28, 28, 24, 5, 5, 48, 2, "SAME")]


@pytest.mark.parametrize("case, forward", [(c, f) for c in FUSED_CASES for f in (*BLOCKED, "lanes", "winograd4", "built-in")
                                           if (f != "lanes" or lanes_apply("fwd", c[3], c[6], np.float32))
                                           and (f != "winograd4" or winograd_applies(*c[4:6], c[3], c[6], c[7]))],
                         ids=lambda c: f"{c[1]}x{c[2]}x{c[3]}-{c[4]}x{c[5]}to{c[6]}-s{c[7]}" if isinstance(c, tuple) else c)
def test_the_fused_inference_op_equals_its_ops_one_by_one(empty_store, monkeypatch, case, forward):
    """``conv2d_infer`` (conv + bias, batch normalisation, ReLU, max-pool as one op) and
    ``conv2d_forward_relu`` (training) give
    the fast backend's ops' values bit for bit, and the reference's within float32's bound:
    fused into the blocked forward's write of y (the pool too for even outputs without a
    normalisation; odd ones, e.g. 7 × 7 or 12 × 10 VALID → 10 × 8, pool after it), into the
    lanes forward's (the pool after it), into
    Winograd's output transform (F(2×2), the built-in choice for the 5 × 5 layers with 16
    and 32 channels, or F(4×4), where each output tile holds four pool windows; for the
    stride-2 cases over the space-to-depth input; the normalisation too, the pool then
    after it) or run after another algorithm. Every scratch buffer is NaN-filled first, so
    a read of stale rows or pixels would show."""
    from scratchnet.kernels import _runtime, blocked, lanes, winograd

    def stale(slot, shape, dtype):
        buf = _runtime.scratch(slot, shape, dtype)
        buf[...] = np.nan
        return buf

    for module in (blocked, lanes, winograd):
        monkeypatch.setattr(module, "scratch", stale)
    key, (x, w, b, _, _), _ = setup(case, np.float32)
    if forward != "built-in":
        fake_entry(empty_store, "fwd", key, f"{forward}/1")
    assert conv.choose("fwd", key).algorithm == forward or forward == "built-in" and conv.choose("fwd", key).algorithm not in (*BLOCKED, "lanes")
    stride, padding, f = case[7], case[8], case[6]
    rng = np.random.default_rng(5)
    stats = rng.normal(0, 0.5, f).astype(np.float32), rng.uniform(0.5, 2, f).astype(np.float32)
    y = fast.conv2d_forward(x, w, b, stride, padding)[0]
    for bn in (None, (*stats, rand(rng, (f,), np.float32), rand(rng, (f,), np.float32), 1e-3), (*stats, None, None, 1e-5)):
        for relu in (False, True):
            for pool in (None, ((2, 2), (2, 2), "SAME"), ((3, 3), (2, 2), "VALID")):
                want = fast.batchnorm(y, *bn) if bn else y
                want = fast.relu(want) if relu else want
                want = fast.max_pool(want, *pool) if pool else want
                got = fast.conv2d_infer(x, w, b, stride, padding, bn=bn, relu=relu, pool=pool)
                what = f"bn={'none' if bn is None else 'plain' if bn[2] is None else 'offset, scale'} relu={relu} pool={pool}"
                np.testing.assert_array_equal(got, want, err_msg=what)
                close(got, ref.conv2d_infer(x, w, b, stride, padding, bn=bn, relu=relu, pool=pool), np.float32,
                      f"{what} against the reference")
    # the training forward with its ReLU: the same y, and a cache that gives the same gradients
    y_relu, cache = fast.conv2d_forward_relu(x, w, b, stride, padding)
    np.testing.assert_array_equal(y_relu, fast.relu(y), err_msg="conv2d_forward_relu")
    dy = rand(rng, y.shape, np.float32)
    for name, got, want in zip(("dx", "dw", "db"), fast.conv2d_backward(dy, cache),
                               fast.conv2d_backward(dy, fast.conv2d_forward(x, w, b, stride, padding)[1])):
        np.testing.assert_array_equal(got, want, err_msg=f"conv2d_forward_relu's cache: {name}")


@pytest.mark.parametrize("case", [c for c in FUSED_CASES if c[3] > 1] + [(2, 13, 11, 5, 3, 3, 8, 2, "VALID")],
                         ids=lambda c: f"{c[1]}x{c[2]}x{c[3]}-{c[4]}x{c[5]}to{c[6]}-s{c[7]}")
def test_the_fused_backward_op_equals_its_ops_one_by_one(empty_store, monkeypatch, case):
    """``conv2d_backward_relu`` (a convolution's backward and the ReLU's before it) gives
    ``conv2d_backward`` then ``relu_backward`` bit for bit, with every input-gradient
    algorithm: the lanes one applies the ReLU as it stores dx (a masked load of the gate
    where C is not a whole number of vectors: 5, 12, 24 channels), the others in place on
    dx; Winograd's one pass for dx and dw likewise. The gate has zeros, negatives (a
    ReLU's input as its cache) and a NaN, which passes no gradient."""
    from scratchnet.kernels import _runtime, lanes

    def stale(slot, shape, dtype):
        buf = _runtime.scratch(slot, shape, dtype)
        buf[...] = np.nan
        return buf

    monkeypatch.setattr(lanes, "scratch", stale)
    key, (x, w, b, dy, cache), _ = setup(case, np.float32)
    gate = np.where(x > 0.5, 0, x).astype(np.float32)
    gate.reshape(-1)[7] = np.nan
    first = {c.algorithm: c for c in reversed(candidates("dx", key))}  # one chunk size each, and lanes by one image
    dx_choices = [*first.values(), *([Choice("lanes", 1)] if "lanes" in first else [])]
    assert ("lanes" in first) is lanes_apply("dx", case[3], case[6], np.float32)
    algorithms = [("split", str(c)) for c in dx_choices]
    algorithms += [(str(c), None) for c in candidates("bwd", key) if c.algorithm != "split"][:1]
    for bwd, dx in algorithms:
        fake_entry(empty_store, "bwd", key, bwd)
        if dx:
            fake_entry(empty_store, "dx", key, dx)
        want = fast.conv2d_backward(dy, cache)
        got = fast.conv2d_backward_relu(dy, cache, gate)
        np.testing.assert_array_equal(got[0], fast.relu_backward(want[0], gate), err_msg=f"{bwd} {dx}: dx")
        for name, g, r in zip(("dw", "db"), got[1:], want[1:]):
            np.testing.assert_array_equal(g, r, err_msg=f"{bwd} {dx}: {name}")
