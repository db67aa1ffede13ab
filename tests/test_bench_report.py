"""``bench.report`` and ``bench.machine`` without running a benchmark: the CPU slug and
vector extensions, per-step times for Keras ``fit`` (several steps a call), the tables,
and the side-by-side table over machines (per-CPU folders, the marked block of a doc)."""

import json

import pytest

from bench import machine, report

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16

processor\t: 1
model name\t: something else
"""
XEON = """vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: avx2 fma avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8
"""


def test_slug_and_vector_extensions_come_from_the_first_processor():
    info = machine.cpuinfo(ZEN4)
    assert machine.slug(info) == "amd-epyc-f25m17"
    assert machine.vector_extensions(info) == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                               "avx512_vnni", "avx512_bf16"]
    xeon = machine.cpuinfo(XEON)
    assert machine.slug(xeon) == "intel-xeon-platinum-8481c-f6m143"
    assert "amx_bf16" in machine.vector_extensions(xeon)


def bench_json(path, impl, entries):
    """A pytest-benchmark JSON file: entries = [(group, median s, extra_info)]."""
    path.write_text(json.dumps({"benchmarks": [
        {"group": g, "stats": {"median": t}, "extra_info": {"impl": impl, **info}} for g, t, info in entries]}))


def fake_run(raw):
    raw.mkdir(parents=True)
    step = {"case": "mlp", "op": "train step", "batch": 100}
    inf = {"case": "conv3", "op": "inference", "batch": 1000}
    bench_json(raw / "round1-scratchnet.json", "fast", [
        ("train step mlp", 0.002, step), ("inference conv3 batch 1000", 0.050, {**inf, "cache_bytes": 67e6}),
        ("sweep mlp batch 500", 0.010, {"case": "mlp", "op": "sweep", "batch": 500})])
    bench_json(raw / "round1-numpy.json", "numpy", [("sgemm 2048", 0.1, {"flops": 2.0 * 2048 ** 3, "case": "sgemm"})])
    bench_json(raw / "round1-tf.json", "tf", [("train step mlp", 0.003, step), ("inference conv3 batch 1000", 0.040, inf),
                                              ("sweep mlp batch 500", 0.020, {"case": "mlp", "op": "sweep", "batch": 500})])
    # Keras: one call ran 10 steps in 25 ms, i.e. 2.5 ms a step: TF best for mlp
    bench_json(raw / "round1-tf-keras.json", "tf-keras", [("train step mlp", 0.025, {**step, "steps_per_call": 10})])


def test_keras_fit_is_timed_per_step_and_counts_in_tf_best(tmp_path):
    fake_run(tmp_path / "raw")
    med, counts, meta = report.collect(tmp_path / "raw")
    assert med[("train step mlp", "tf-keras")] == 0.0025
    sgemm, tables = report.build_tables(med, meta)
    assert round(sgemm) == round(2.0 * 2048 ** 3 / 0.1 / 1e9)
    (train,) = tables["train"]
    assert train["tf_best_impl"] == "tf-keras" and report.speedup(train) == 1.25
    (inf,) = tables["inference"]
    assert inf["tf_best_impl"] == "tf" and inf["cache_bytes"] == 67e6
    text = report.markdown(sgemm, tables, "## header")
    assert "| conv3 | 1000 |  | 50.00 | 20.0 k | 40.00 |" in text          # images/s from the batch and time
    assert "| 67.0 |" in text                                      # caches kept, MB
    assert "| mlp | 500 | 10.00 | 20 |" in text                    # sweep: µs per image
    assert "Winograd" not in text                                  # no kernel rows, no kernel note
    assert "| mlp | 2.00× |" in text                               # the sweep's ratios by batch (one TF row: 20 ms)


def test_each_cpu_gets_its_folder_and_the_doc_block_shows_them_side_by_side(tmp_path):
    fake_run(tmp_path / "raw")
    med, _, meta = report.collect(tmp_path / "raw")
    sgemm, tables = report.build_tables(med, meta)
    for slug, started in (("intel-xeon-f6m143", "2026-12-02"), ("amd-epyc-f25m17", "2026-12-01")):
        m = {"cpu": slug.upper(), "family": "6", "model": "143", "vector_extensions": ["avx512f"], "threads": 2}
        folder = tmp_path / "results" / slug
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(report.summary(m, "cmd", started, 5, sgemm, tables)))
    doc = tmp_path / "docs" / "performance.md"
    doc.parent.mkdir()
    doc.write_text(f"intro\n{report.DOCS_BEGIN}\nold table\n{report.DOCS_END}\noutro\n")
    report.write_machines(tmp_path / "results", doc)
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{report.DOCS_END}\noutro\n") and "old table" not in text
    header = next(l for l in text.splitlines() if l.startswith("| | "))
    assert header.index("AMD-EPYC") < header.index("INTEL-XEON")   # ordered by date
    assert "(../results/amd-epyc-f25m17/report.md)" in header
    row = next(l for l in text.splitlines() if l.startswith("| train step mlp |"))
    assert row.count("**1.25×** (2.00 vs 2.50 ms, tf-keras)") == 2
    assert (tmp_path / "results" / "README.md").read_text().count("inference conv3 batch 1000") == 1
    assert "| sweep mlp: speed-up by batch | 2.00× (batch 500) | 2.00× (batch 500) |" in text


def test_report_names_the_convolution_algorithm_of_every_layer_pass():
    from bench.report import conv_plans, plan_markdown
    from scratchnet.commands.tune import conv_recipes
    plans = conv_plans()
    assert list(plans) == conv_recipes()
    assert plans["conv3"]["train"].startswith("conv1 fwd ") and " dx " in plans["conv3"]["train"]
    assert "dx" not in plans["conv3"]["eval"] and "of 3 measured" in plans["conv3"]["eval"]
    table = plan_markdown(plans).splitlines()
    assert sum(line.startswith("| conv") or line.startswith("| deep") for line in table) == len(plans)


def test_a_part_of_enough_rounds_is_shown_beside_the_full_reports_and_quick_checks_are_not(tmp_path):
    fake_run(tmp_path / "raw")
    med, _, meta = report.collect(tmp_path / "raw")
    sgemm, tables = report.build_tables(med, meta)
    m = {"cpu": "AMD EPYC", "family": "25", "model": "17", "threads": 2}
    for sub, started in (("", "2026-11-23"), ("steps-and-inference", "2026-12-02"), ("quick", "2026-12-03")):
        folder = tmp_path / "results" / "amd-epyc-f25m17" / sub
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(report.summary(m, f"cmd {sub}", started, 5, sgemm, tables)))
    found = report.load_summaries(tmp_path / "results")
    assert [s["folder"] for s in found] == ["amd-epyc-f25m17", "amd-epyc-f25m17/steps-and-inference"]
    header = report.side_by_side(found).splitlines()[0]
    assert "(amd-epyc-f25m17/steps-and-inference/report.md)" in header


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--min-rounds", "-1"], ["--keras-steps", "0"],
                                  ["--max-time", "0"]])
def test_bad_counts_are_refused_before_anything_runs_or_is_written(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as stop:
        report.main([*argv, "--out", str(tmp_path / "results")])
    assert stop.value.code == 2
    assert f"error: {argv[0]} must be" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
