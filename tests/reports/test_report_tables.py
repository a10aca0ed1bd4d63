"""report.md's tables against hand-made documents with known answers: medians and ranges over
repeats, ratios, the noise verdict (both of its conditions), scaling, time to a target loss, the A/A
floor of loss curves, failed and skipped cells, comparisons within a run and across runs, and the
older per-file documents of bench/results."""
import json

import pytest

from report_docs import cell_doc, comparison, run_report, tables, tables_only, write_run

FAST = [5.0, 4.0, 3.0, 2.0, 1.0, 1.0]   # smoothed (5-step trailing mean) minimum 2.2
SLOW = [5.0, 4.5, 4.0, 3.5, 3.0, 2.5]   # smoothed minimum 3.5: the target every trainer reaches
PROFILE = {"ranks": [{"rank": 0, "steps": [{"index": i, "exposed_comm_ns": 2e6 + i, "compute_ns": 8e6, "idle_ns": 1e6}
                                           for i in range(6)],
                      "summary": {"median": {"compute_ns": 8e6, "exposed_comm_ns": 2e6, "other_ns": 0.5e6, "idle_ns": 1e6},
                                  "fractions": {"exposed_comm": 0.16}}}]}


def run_a(folder):
    docs = []
    for r, (tps, p50) in enumerate([(1000, 0.10), (1100, 0.11), (900, 0.09)], start=1):
        docs.append(cell_doc("w", "builtin", 1, tps, p50, FAST, peak=2**30, mfu=0.3, repeat=r,
                             cell_id="w/builtin/n1/b4/g1/s64#1a2b3c4d", profile=PROFILE if r == 1 else None))
    for r, (tps, p50) in enumerate([(500, 0.20), (520, 0.21), (480, 0.19)], start=1):
        docs.append(cell_doc("w", "hf", 1, tps, p50, SLOW, peak=2 * 2**30, mfu=0.25, repeat=r,
                             cell_id="w/hf/n1/b4/g1/s64#5e6f7a8b"))
    docs.append(cell_doc("w", "builtin", 2, 950, 0.1, FAST, repeat=1, cell_id="w/builtin/n2/b4/g1/s64#11111111"))
    docs.append(cell_doc("w", "hf", 2, 400, 0.2, SLOW, repeat=1, cell_id="w/hf/n2/b4/g1/s64#22222222"))
    # Ranges apart, but the medians differ by less than the candidate's own spread: within noise.
    for r, tps in enumerate([1000, 1200, 1100], start=1):
        docs.append(cell_doc("v", "builtin", 1, tps, 0.1, FAST, repeat=r, cell_id="v/builtin/n1/b4/g1/s64#33333333"))
    for r, tps in enumerate([1210, 1220, 1230], start=1):
        docs.append(cell_doc("v", "hf", 1, tps, 0.1, FAST, repeat=r, cell_id="v/hf/n1/b4/g1/s64#44444444"))
    docs.append(cell_doc("w", "liger", 1, state="failed", reason="rank 1 hung in step 3", repeat=1,
                         cell_id="w/liger/n1/b4/g1/s64#55555555"))
    docs.append(cell_doc("w", "unsloth", 1, state="skipped", reason="unsloth is not importable", repeat=1,
                         cell_id="w/unsloth/n1/b4/g1/s64#66666666"))
    return write_run(folder, docs)


@pytest.fixture(scope="module")
def report_a(tmp_path_factory):
    run = run_a(tmp_path_factory.mktemp("runs") / "20261129-000000-aaaa")
    r = run_report(run, "--no-tensorboard")
    md = (run / "report" / "report.md").read_text()
    return run, md, r


def test_within_run_table_equals_documents(report_a):
    _, md, _ = report_a
    rows = comparison(md, "builtin against hf")
    w1 = "w n1 b4 g1 s64"
    tps = rows[(w1, "tokens/s per GPU")]
    assert tps["candidate"] == "1,000 (900-1,100, 3 runs)"   # median and range of the three repeats
    assert tps["baseline"] == "500 (480-520, 3 runs)"
    assert tps["ratio"] == "2.000x"
    assert tps["verdict"] == "better, beyond noise"           # ranges apart and 100% > the 20% spread
    p50 = rows[(w1, "step time p50")]
    assert (p50["candidate"], p50["baseline"], p50["ratio"]) == ("100.0 ms (90.0-110.0, 3 runs)", "200.0 ms (190.0-210.0, 3 runs)", "0.500x")
    assert p50["verdict"] == "better, beyond noise"
    mem = rows[(w1, "peak memory allocated")]
    assert (mem["candidate"], mem["baseline"], mem["verdict"]) == ("1.00 GiB (1.00-1.00, 3 runs)", "2.00 GiB (2.00-2.00, 3 runs)", "better, beyond noise")
    assert rows[(w1, "MFU")]["ratio"] == "1.200x"
    # Only the first repeat of the built-in cell is profiled: 0.16 of its step is exposed communication.
    assert rows[(w1, "exposed communication (share of step)")]["candidate"] == "16.0%"
    # Target 3.5 (SLOW's smoothed minimum): FAST reaches it after 4 steps, SLOW after 6; the warm-up
    # step counts at the median step time, so 4 x p50 and 6 x p50 for each repeat.
    ttl = rows[(w1, "time to target loss")]
    assert ttl["candidate"] == "400.0 ms (360.0-440.0, 3 runs)"
    assert ttl["baseline"] == "1.20 s (1.14-1.26, 3 runs)"
    assert ttl["ratio"] == "0.333x" and ttl["verdict"] == "better, beyond noise"
    assert rows[(w1, "GPU-hours to target loss")]["candidate"].startswith(f"{0.4 / 3600:.3g} h")
    # Curves: largest |FAST - SLOW| over the measured steps is |1 - 3| at step 4; repeats are identical:
    # both floors 0, the baseline's named on a tie.
    dist = rows[("", "loss curve distance (A/A floor)")] if ("", "loss curve distance (A/A floor)") in rows else rows[(w1, "loss curve distance (A/A floor)")]
    assert dist["candidate"] == "2.00e+00" and dist["baseline"] == "floor 0.00e+00 (hf's)" and dist["verdict"] == "beyond A/A floor"
    # Bias: FAST - SLOW over the measured steps is -0.5, -1, -1.5, -2, -1.5: mean -1.3, beyond the A/A bias 0.
    bias = rows[(w1, "loss curve bias (mean difference)")]
    assert (bias["candidate"], bias["baseline"], bias["verdict"]) == ("-1.30e+00", "floor 0.00e+00 (largest A/A bias)", "biased")
    w2 = rows[("w n2 b4 g1 s64", "tokens/s per GPU")]
    assert (w2["candidate"], w2["baseline"], w2["ratio"], w2["verdict"]) == ("950", "400", "2.375x", "one run: no verdict")


def test_tidy_rows_equal_documents(report_a):
    run, _, _ = report_a
    import csv
    with open(run / "report" / "cells.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16                                   # every document, failed and skipped ones too
    for row in rows:
        doc = json.loads((run / "cells" / f"cell{rows.index(row)}.json").read_text())
        assert row["cell_id"] == doc["cell_id"] and int(row["repeat"]) == doc["repeat"]
        assert row["state"] == doc["status"]["state"]
        if row["state"] == "ok":
            assert float(row["tokens_per_s_per_gpu"]) == doc["summary"]["tokens_per_s_per_gpu"]
            assert float(row["step_time_p50_s"]) == doc["summary"]["step_time_p50_s"]
    first = rows[0]
    assert (first["steps_to_target"], float(first["time_to_target_s"])) == ("4", pytest.approx(0.4))


def test_verdict_needs_both_conditions(report_a):
    _, md, _ = report_a
    rows = comparison(md, "builtin against hf")
    v = rows[("v n1 b4 g1 s64", "tokens/s per GPU")]
    # 1000-1200 and 1210-1230 do not overlap, but 1100 / 1220 - 1 = -9.8% is inside the 18.2% spread.
    assert v["ratio"] == "0.902x" and v["verdict"] == "within noise"
    assert rows[("v n1 b4 g1 s64", "step time p50")]["verdict"] == "within noise"  # equal ranges


def test_cells_table_scaling_and_targets(report_a):
    _, md, _ = report_a
    cells = {(r["workload"], r["trainer"], r["GPUs"]): r for r in tables(md)["All cells"]}
    assert cells[("w", "builtin", "2")]["scaling"] == "95.0%"   # 950 / 1000
    assert cells[("w", "hf", "2")]["scaling"] == "80.0%"        # 400 / 500
    assert cells[("w", "builtin", "1")]["steps to target"] == "4 (4-4, 3 runs)"
    assert cells[("w", "hf", "1")]["steps to target"] == "6 (6-6, 3 runs)"
    assert cells[("w", "builtin", "1")]["runs"] == "3"
    assert "w n1 b4 g1 s64 3.5000" in md


def test_failed_and_skipped_cells_are_listed_not_counted(report_a):
    _, md, r = report_a
    bad = {row["cell"]: row for row in tables(md)["Cells that did not run to the end"]}
    assert bad["w/liger/n1/b4/g1/s64#55555555"]["state"] == "failed"
    assert bad["w/liger/n1/b4/g1/s64#55555555"]["reason"] == "rank 1 hung in step 3"
    assert bad["w/unsloth/n1/b4/g1/s64#66666666"]["state"] == "skipped"
    assert "liger against hf" not in md and "unsloth" not in "".join(r["trainer"] for r in tables(md)["All cells"])


def test_figures_written_and_named(report_a):
    run, md, r = report_a
    out = run / "report"
    for name in ("throughput.png", "scaling.png", "loss.png", "time_to_loss.png", "mfu.png", "breakdown.png", "memory.png"):
        assert (out / name).stat().st_size > 10_000, name
        assert f"]({name})" in md
    assert not (out / "kernels.png").exists()   # no kernel documents: no kernel figure
    assert "report.html" in r.stdout


def test_rule_is_stated(report_a):
    _, md, _ = report_a
    assert "do not overlap AND" in md and "one run: no verdict" in md


def test_baseline_trainer_choice(tmp_path):
    run = run_a(tmp_path / "run")
    assert tables_only(run, "--baseline", "builtin", "--candidate", "hf", "--no-tensorboard", "--out", tmp_path / "o") == 0
    rows = comparison((tmp_path / "o" / "report.md").read_text(), "hf against builtin")
    assert rows[("w n1 b4 g1 s64", "tokens/s per GPU")]["ratio"] == "0.500x"
    assert rows[("w n1 b4 g1 s64", "tokens/s per GPU")]["verdict"] == "worse, beyond noise"


def test_across_runs_by_cell_id(tmp_path):
    cand = run_a(tmp_path / "cand")
    base_docs = [cell_doc("w", "builtin", 1, tps, 0.1, FAST, repeat=r, cell_id="w/builtin/n1/b4/g1/s64#1a2b3c4d")
                 for r, tps in enumerate([800, 810, 790], start=1)]
    base = write_run(tmp_path / "base", base_docs)
    assert tables_only(cand, "--baseline", base, "--no-tensorboard", "--out", tmp_path / "o") == 0
    md = (tmp_path / "o" / "report.md").read_text()
    rows = comparison(md, "builtin: cand against base")
    tps = rows[("w n1 b4 g1 s64", "tokens/s per GPU")]
    assert (tps["candidate"], tps["baseline"], tps["ratio"], tps["verdict"]) == (
        "1,000 (900-1,100, 3 runs)", "800 (790-810, 3 runs)", "1.250x", "better, beyond noise")
    assert len(rows) >= 1 and not any(k[0].startswith("v ") for k in rows)  # only cells the baseline has


def test_several_run_folders_are_repeats(tmp_path):
    folders = []
    for i, tps in enumerate([100, 130, 120]):
        folders.append(write_run(tmp_path / f"r{i}", [
            cell_doc("w", "builtin", 1, tps, 0.1, FAST, repeat=1, cell_id="w/builtin/n1/b4/g1/s64#1a2b3c4d"),
            cell_doc("w", "hf", 1, 50, 0.2, SLOW, repeat=1, cell_id="w/hf/n1/b4/g1/s64#5e6f7a8b")]))
    assert tables_only(*folders, "--no-tensorboard", "--out", tmp_path / "o") == 0
    rows = comparison((tmp_path / "o" / "report.md").read_text(), "builtin against hf")
    assert rows[("w n1 b4 g1 s64", "tokens/s per GPU")]["candidate"] == "120 (100-130, 3 runs)"


def test_a_results_folder_reads_its_run_folders_through_their_index(tmp_path):
    """bench/results/<date>/runs/<id>/: each cell's document is in cells/ and again as work/<cell>/result.json;
    read once, one run each side gives no verdict (read twice, the copy looked like a second repeat)."""
    run = write_run(tmp_path / "results" / "runs" / "r1", [
        cell_doc("w", "builtin", 1, 1000, 0.1, FAST, repeat=1, cell_id="w/builtin/n1/b4/g1/s64#1a2b3c4d"),
        cell_doc("w", "hf", 1, 500, 0.2, SLOW, repeat=1, cell_id="w/hf/n1/b4/g1/s64#5e6f7a8b")])
    for f in sorted((run / "cells").iterdir()):
        (run / "work" / f.stem).mkdir(parents=True)
        (run / "work" / f.stem / "result.json").write_text(f.read_text())
    assert tables_only(tmp_path / "results", "--no-tensorboard", "--out", tmp_path / "o") == 0
    md = (tmp_path / "o" / "report.md").read_text()
    assert "(2 cell documents)" in md
    tps = comparison(md, "builtin against hf")[("w n1 b4 g1 s64", "tokens/s per GPU")]
    assert (tps["ratio"], tps["verdict"]) == ("2.000x", "one run: no verdict")


def test_a_collectives_run_beside_the_training_runs_is_not_read_as_cells(tmp_path):
    """`ddpbench bench collectives` writes run folders of the same cell format (kind "collectives"): a results
    folder holding one beside a training run gives the training run's cells only."""
    write_run(tmp_path / "results" / "runs" / "r1", [
        cell_doc("w", "builtin", 1, 1000, 0.1, FAST, repeat=1, cell_id="w/builtin/n1/b4/g1/s64#1a2b3c4d"),
        cell_doc("w", "hf", 1, 500, 0.2, SLOW, repeat=1, cell_id="w/hf/n1/b4/g1/s64#5e6f7a8b")])
    coll = tmp_path / "results" / "collectives"
    (coll / "cells").mkdir(parents=True)
    cell = {"kind": "collectives", "cell_id": "collectives/all_reduce/bf16/in-place/n2#0", "config": {"nproc": 2},
            "status": "ok", "summary": {"busbw_GBps": 332.0}, "rows": []}
    (coll / "cells" / "all_reduce.json").write_text(json.dumps(cell))
    (coll / "run.json").write_text(json.dumps({"kind": "collectives", "cells": [
        {"cell_id": cell["cell_id"], "file": "cells/all_reduce.json", "name": "collectives/all_reduce", "status": "ok"}]}))
    assert tables_only(tmp_path / "results", "--no-tensorboard", "--out", tmp_path / "o") == 0
    assert "(2 cell documents)" in (tmp_path / "o" / "report.md").read_text()


def test_workload_names_with_a_slash_and_skipped_repeats_of_run_json():
    """A cell_id ends in trainer/nN/bB/gG/sS; all before them, '/' included, is the workload."""
    from ddpbench_report.load import _skipped_from_index, make_doc
    d = make_doc(cell_doc("x/y", "hf", 2, cell_id="x/y/hf/n2/b4/g1/s64#1a2b3c4d", repeat=2), "p.json", "run")
    assert (d.workload, d.trainer, d.nproc, d.repeat) == ("x/y", "hf", 2, 2)
    # A cell run.json lists without a document (more GPUs than visible), in its second round.
    s = _skipped_from_index({"name": "x/y/hf/n2/b4/g1/s64", "cell_id": "x/y/hf/n2/b4/g1/s64#1a2b3c4d", "repeat": 2,
                             "status": "skipped: needs 2 GPU(s), 0 visible", "file": ""}, "run")
    assert (s.workload, s.trainer, s.nproc, s.micro_batch, s.cell_id, s.repeat, s.state, s.reason) == (
        "x/y", "hf", 2, 4, "x/y/hf/n2/b4/g1/s64#1a2b3c4d", 2, "skipped", "needs 2 GPU(s), 0 visible")


def test_older_documents_and_aa_floor(tmp_path):
    """bench/results' layout: <workload>-<trainer>-n<N>[-r<R>].json without cell_id, an A/A cell."""
    folder = tmp_path / "results" / "w"
    folder.mkdir(parents=True)
    for name, d in {
        "w-builtin-n1-r1.json": cell_doc("w", "builtin", 1, 1000, 0.1, [5.0, 4.0, 3.0]),
        "w-builtin-n1-r2.json": cell_doc("w", "builtin", 1, 1010, 0.1, [5.0, 4.0, 3.03]),
        "w-hf-n1.json": cell_doc("w", "hf", 1, 900, 0.1, [5.0, 4.02, 3.0]),
        "w-aa-n1.json": cell_doc("w", "builtin", 1, 990, 0.1, [5.0, 4.04, 3.0], micro_batch=2, grad_accum=2),
    }.items():
        d.pop("cell")  # `train --out` documents name no suite cell
        (folder / name).write_text(json.dumps(d))
    assert tables_only(tmp_path / "results", "--no-tensorboard", "--out", tmp_path / "o") == 0
    md = (tmp_path / "o" / "report.md").read_text()
    rows = comparison(md, "builtin against hf")
    assert rows[("w n1 b4 g1 s64", "tokens/s per GPU")]["candidate"] == "1,005 (1,000-1,010, 2 runs)"
    assert rows[("w n1 b4 g1 s64", "tokens/s per GPU")]["verdict"] == "one run: no verdict"
    dist = [r for k, r in rows.items() if k[1] == "loss curve distance (A/A floor)"][0]
    # Measured steps (the first is warm-up): builtin r1 vs hf: |4 - 4.02|; r2 vs hf: |3.03 - 3|; median of the two.
    assert dist["candidate"] == "2.50e-02"
    # hf has neither a twin nor repeats: its floor is not assumed to be the built-in one's, so no verdict.
    assert dist["baseline"] == "no A/A floor for hf" and dist["verdict"] == "no A/A floor"
    # The built-in floor is stated: A/A against the built-in repeats |4.04 - 4| (repeats: 0.03).
    assert tables(md)["A/A floors"] == [{"cell": "w n1 b4 g1 s64", "trainer": "builtin", "A/A twin": "b2 g2 (1 runs)",
                                         "floor": "4.00e-02", "bias": "2.00e-02"}]
    # Bias, builtin minus hf: r1 (-0.02 + 0) / 2, r2 (-0.02 + 0.03) / 2; median -0.0025. The bias floor is the
    # workload's: the built-in A/A bias (twin minus r1: 0.04 / 2), though hf has no floor of its own.
    bias = [r for k, r in rows.items() if k[1] == "loss curve bias (mean difference)"][0]
    assert (bias["candidate"], bias["baseline"], bias["verdict"]) == ("-2.50e-03", "floor 2.00e-02 (largest A/A bias)",
                                                                     "no bias beyond A/A")
    # The A/A cell sets the floor only: it is not a trainer of the tables.
    assert "A/A" not in "".join(r["trainer"] for r in tables(md)["All cells"])


def test_each_trainer_has_its_own_floor_and_the_larger_judges(tmp_path):
    """A suite run with aa = ["builtin", "hf"]: twins (workload "<w>-aa") of both trainers; each floor
    is stated, and the hf curve is judged by the larger floor, named."""
    cid = lambda w, t, b, g: f"{w}/{t}/n1/b{b}/g{g}/s64#0000{b}{g}{len(t)}"
    docs = [
        cell_doc("w", "builtin", 1, 1000, 0.1, [5.0, 4.0, 3.0], repeat=1, cell_id=cid("w", "builtin", 4, 1)),
        cell_doc("w-aa", "builtin", 1, 900, 0.1, [5.0, 4.01, 3.0], micro_batch=2, grad_accum=2, repeat=1,
                 cell_id=cid("w-aa", "builtin", 2, 2)),
        cell_doc("w", "hf", 1, 800, 0.1, [5.0, 4.03, 3.0], repeat=1, cell_id=cid("w", "hf", 4, 1)),
        cell_doc("w-aa", "hf", 1, 700, 0.1, [5.0, 4.03, 2.95], micro_batch=2, grad_accum=2, repeat=1,
                 cell_id=cid("w-aa", "hf", 2, 2)),
        cell_doc("w", "liger", 1, 800, 0.1, [5.0, 4.0, 3.005], repeat=1, cell_id=cid("w", "liger", 4, 1)),
    ]
    run = write_run(tmp_path / "runs" / "20261129-000000-ffff", docs)
    assert tables_only(run, "--no-tensorboard", "--baseline", "builtin", "--candidate", "hf") == 0
    md = (run / "report" / "report.md").read_text()
    floors = {r["trainer"]: r["floor"] for r in tables(md)["A/A floors"]}
    assert floors == {"builtin": "1.00e-02", "hf": "5.00e-02"}
    hf = [r for k, r in comparison(md, "hf against builtin").items() if k[1] == "loss curve distance (A/A floor)"][0]
    # |4.03 - 4| = 0.03 is beyond the built-in floor 0.01 but within hf's own 0.05, the larger.
    assert (hf["candidate"], hf["baseline"], hf["verdict"]) == ("3.00e-02", "floor 5.00e-02 (hf's)", "within A/A floor")
    # liger has no twin: no verdict, and it says whose floor is missing.
    liger = [r for k, r in comparison(md, "liger against builtin").items() if k[1] == "loss curve distance (A/A floor)"][0]
    assert (liger["baseline"], liger["verdict"]) == ("no A/A floor for liger", "no A/A floor")


def test_bias_tells_a_lower_curve_from_noise(tmp_path):
    """Issue 10's two cases: hf differs from the built-in by noise that flips sign (beyond the max floor,
    no bias); unsloth lies below it at every step by less than the max floor (within it, biased)."""
    cid = lambda w, t, b, g: f"{w}/{t}/n1/b{b}/g{g}/s64#0000{b}{g}{len(t)}"
    curves = {  # after the warm-up step
        ("w", "builtin"): [4.0, 3.0, 2.0, 1.0],
        ("w-aa", "builtin"): [4.02, 3.0, 2.0, 1.0],    # max 0.02, mean +0.005: the workload's A/A bias
        ("w", "hf"): [4.03, 2.97, 2.03, 0.97],          # against builtin: max 0.03, mean 0
        ("w-aa", "hf"): [4.01, 2.99, 2.01, 0.99],       # max 0.02, mean 0
        ("w", "unsloth"): [3.99, 2.99, 1.99, 0.99],     # against builtin: max 0.01, mean -0.01
        ("w-aa", "unsloth"): [3.98, 3.0, 1.98, 1.0],    # max 0.01, mean 0
    }
    docs = [cell_doc(w, t, 1, 1000, 0.1, [5.0] + c, repeat=1, cell_id=cid(w, t, 2 if w == "w-aa" else 4, 2 if w == "w-aa" else 1),
                     **({"micro_batch": 2, "grad_accum": 2} if w == "w-aa" else {}))
            for (w, t), c in curves.items()]
    run = write_run(tmp_path / "runs" / "20261129-000000-eeee", docs)
    assert tables_only(run, "--no-tensorboard", "--baseline", "builtin", "--candidate", "hf") == 0
    md = (run / "report" / "report.md").read_text()
    floors = {r["trainer"]: r for r in tables(md)["A/A floors"]}
    assert {t: r["floor"] for t, r in floors.items()} == {"builtin": "2.00e-02", "hf": "2.00e-02", "unsloth": "1.00e-02"}
    assert floors["builtin"]["bias"] == "5.00e-03"
    assert float(floors["hf"]["bias"]) < 1e-12 and float(floors["unsloth"]["bias"]) < 1e-12  # 0 but for rounding
    figures = lambda title: {k[1]: r for k, r in comparison(md, title).items()}
    hf, unsloth = figures("hf against builtin"), figures("unsloth against builtin")
    assert hf["loss curve distance (A/A floor)"]["verdict"] == "beyond A/A floor"
    assert (hf["loss curve bias (mean difference)"]["baseline"], hf["loss curve bias (mean difference)"]["verdict"]) == (
        "floor 5.00e-03 (largest A/A bias)", "no bias beyond A/A")
    assert unsloth["loss curve distance (A/A floor)"]["verdict"] == "within A/A floor"
    assert (unsloth["loss curve bias (mean difference)"]["candidate"], unsloth["loss curve bias (mean difference)"]["verdict"]) == (
        "-1.00e-02", "biased")
    summary = {r["comparison"]: (r["loss curves"], r["loss bias"]) for r in tables(md)["Summary"]}
    assert summary == {"hf against builtin": ("beyond A/A floor", "no bias beyond A/A"),
                       "unsloth against builtin": ("within A/A floor", "biased")}


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/run"], "/nonexistent/run: no such file or folder"),
    (["{run}", "--baseline", "nosuchtrainer"], "--baseline nosuchtrainer: neither an existing run folder"),
    (["{run}", "--baseline", "liger"], "--baseline liger: no ok cell of that trainer"),
    (["{empty}"], "no ddpbench result document found"),
    (["{run}", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_unusable_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    run = write_run(tmp_path / "run", [cell_doc("w", "builtin", 1), cell_doc("w", "hf", 1)])
    (tmp_path / "empty").mkdir()
    args = [a.format(run=run, empty=tmp_path / "empty") for a in args]
    with pytest.raises(SystemExit) as exit_:
        raise SystemExit(tables_only(*args))
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_exit_status_of_the_script(tmp_path):
    r = run_report(tmp_path / "missing", check=False)
    assert r.returncode == 2 and r.stderr.strip() == f"ddpbench report: {tmp_path / 'missing'}: no such file or folder"


def test_kernel_documents(tmp_path):
    """Google Benchmark JSON beside the cells: speed-up and share of the copy bandwidth, from medians."""
    run = write_run(tmp_path / "run", [cell_doc("w", "builtin", 1), cell_doc("w", "hf", 1)])
    bench = {"context": {}, "benchmarks": [
        {"name": "BM_copy/4096", "run_type": "iteration", "real_time": 1.0, "time_unit": "us", "bytes_per_second": 4e12},
        {"name": "BM_rmsnorm/baseline/4096", "run_type": "iteration", "real_time": 30.0, "time_unit": "us", "bytes_per_second": 1e12},
        {"name": "BM_rmsnorm/fused/4096", "run_type": "iteration", "real_time": 10.0, "time_unit": "us", "bytes_per_second": 3e12},
        {"name": "BM_swiglu_fused/1024", "run_type": "aggregate", "aggregate_name": "mean", "real_time": 5.0, "time_unit": "us"},
        {"name": "BM_lonely/fused/8", "run_type": "iteration", "real_time": 1.0, "time_unit": "ns"},
    ]}
    (run / "kernels.json").write_text(json.dumps(bench))
    assert tables_only(run, "--no-tensorboard") == 0
    md = (run / "report" / "report.md").read_text()
    assert "L2-" not in md  # no entry says how it was timed
    rows = tables(md)["Kernels"]
    assert rows == [{"kernel": "BM_rmsnorm/*/4096", "baseline": "30.0 us", "fused": "10.0 us",
                     "speed-up": "3.000x", "fused GB/s": "3000.0", "share of copy bandwidth": "75.0%"}]


def test_kernel_run_folder_with_liger(tmp_path):
    """A `ddpbench bench kernels` run folder: its kernel cells are left to kernels.json, whose Liger rows
    add two columns; Google Benchmark's run settings leave the kernel names."""
    run = tmp_path / "kernels-run"
    (run / "cells").mkdir(parents=True)
    cell = {"schema_version": 1, "kind": "kernels", "cell": "kernels/rms_norm/1b/fwd", "config": {"op": "rms_norm"},
            "status": {"state": "ok"}, "summary": {"fused_time_s": 1e-5}, "steps": []}
    (run / "cells" / "rms_norm-1b-fwd.json").write_text(json.dumps(cell))
    (run / "run.json").write_text(json.dumps({"kind": "kernels", "cells": [
        {"name": "kernels/rms_norm/1b/fwd", "status": "ok", "file": "cells/rms_norm-1b-fwd.json"}]}))
    def entry(impl, us, **counters):
        name = f"rms_norm/1b/fwd/{impl}/iterations:10/manual_time"
        return {"name": name, "run_name": name, "run_type": "iteration", "real_time": us, "time_unit": "us", **counters}
    bench = {"benchmarks": [entry("baseline", 60.0, l2_flush=1),
                            entry("fused", 20.0, bytes_per_second=3.3e12, copy_bytes_per_second=4e12, l2_flush=1),
                            entry("liger", 50.0, l2_flush=1)]}
    (run / "kernels.json").write_text(json.dumps(bench))
    assert tables_only(run, "--no-tensorboard") == 0
    md = (run / "report" / "report.md").read_text()
    assert "Timed L2-cold" in md  # as the entries' l2_flush counter says
    rows = tables(md)["Kernels"]
    assert rows == [{"kernel": "rms_norm/1b/fwd/*", "baseline": "60.0 us", "fused": "20.0 us", "speed-up": "3.000x",
                     "fused GB/s": "3300.0", "share of copy bandwidth": "82.5%", "liger": "50.0 us",
                     "fused vs liger": "2.500x"}]


def test_fused_impl_is_the_default_candidate(tmp_path):
    run = write_run(tmp_path / "run", [
        cell_doc("w", "builtin", 1, 1200, impl="fused", cell_id="w/builtin/n1/b4/g1/s64#f0f0f0f0"),
        cell_doc("w", "builtin", 1, 1000, cell_id="w/builtin/n1/b4/g1/s64#b0b0b0b0"),
        cell_doc("w", "hf", 1, 800, cell_id="w/hf/n1/b4/g1/s64#c0c0c0c0")])
    assert tables_only(run, "--no-tensorboard") == 0
    md = (run / "report" / "report.md").read_text()
    assert "Candidate: builtin-fused; baseline: hf" in md
    cell = "w n1 b4 g1 s64"
    assert comparison(md, "builtin-fused against hf")[(cell, "tokens/s per GPU")]["ratio"] == "1.500x"
    assert comparison(md, "builtin-fused against builtin")[(cell, "tokens/s per GPU")]["ratio"] == "1.200x"
    assert comparison(md, "builtin against hf")[(cell, "tokens/s per GPU")]["ratio"] == "1.250x"
    summary = [r["comparison"] for r in tables(md)["Summary"]]
    assert summary == ["builtin-fused against hf", "builtin-fused against builtin", "builtin against hf"]


def test_a_run_with_only_failed_cells_is_still_reported(tmp_path):
    run = write_run(tmp_path / "run", [cell_doc("w", "builtin", 1, state="failed", reason="rank 0 died in setup")])
    assert tables_only(run, "--no-tensorboard") == 0
    md = (run / "report" / "report.md").read_text()
    assert tables(md)["Cells that did not run to the end"][0]["reason"] == "rank 0 died in setup"
    assert "no comparison" in md


def test_two_configurations_of_one_trainer_stay_apart(tmp_path):
    """Same trainer and geometry, another configuration (cell_id hash): not repeats of each other."""
    run = write_run(tmp_path / "run", [
        cell_doc("w", "builtin", 1, 1000, cell_id="w/builtin/n1/b4/g1/s64#aaaa0001"),
        cell_doc("w", "builtin", 1, 2000, cell_id="w/builtin/n1/b4/g1/s64#aaaa0002"),
        cell_doc("w", "hf", 1, 500, cell_id="w/hf/n1/b4/g1/s64#bbbb0001")])
    assert tables_only(run, "--no-tensorboard") == 0
    cells = {r["trainer"]: r for r in tables((run / "report" / "report.md").read_text())["All cells"]}
    assert cells["builtin#aaaa0001"]["tokens/s per GPU"] == "1,000" and cells["builtin#aaaa0001"]["runs"] == "1"
    assert cells["builtin#aaaa0002"]["tokens/s per GPU"] == "2,000"


def test_versions_line_names_the_commit_and_the_source_digest(tmp_path):
    """The fingerprint's source digest (cmake/build_info.cmake) beside the commit; older documents have none."""
    new = cell_doc("w", "builtin", 1, cell_id="w/builtin/n1/b4/g1/s64#1a2b3c4d")
    new["fingerprint"] = {**new["fingerprint"], "source_digest": "0123456789ab"}
    old = cell_doc("w", "hf", 1, cell_id="w/hf/n1/b4/g1/s64#5e6f7a8b")
    assert tables_only(write_run(tmp_path / "r", [new, old]), "--no-tensorboard", "--out", tmp_path / "o") == 0
    line = next(l for l in (tmp_path / "o" / "report.md").read_text().splitlines() if l.startswith("Hardware and versions"))
    assert "commit abc123def456 | source 0123456789ab" in line
    assert tables_only(write_run(tmp_path / "r2", [old]), "--no-tensorboard", "--out", tmp_path / "o2") == 0
    assert "source" not in next(l for l in (tmp_path / "o2" / "report.md").read_text().splitlines()
                                if l.startswith("Hardware and versions"))
