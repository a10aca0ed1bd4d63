"""Holistic Trace Analysis (HTA, pip HolisticTraceAnalysis) reads the traces ddpbench writes, and
finds what ddpbench's own analysis finds in the same records.

Two ranks of hand-built activity with known answers (kernels, a cuBLASLt GEMM and NCCL kernels
launched through the driver API as those libraries do, runtime launches, a memcpy and a memset per
step, NVTX step and phase ranges) go through
the built binary (`ddpbench analyze DIR --traces OUT`); HTA then loads OUT as a user would.

The activity is laid out so that HTA's own window and ddpbench's coincide: HTA keeps what was launched
before the last ProfilerStep began and measures from the first GPU event to the last, so the first
step's memcpy (launched before the step) starts the moment the step begins and every step's last
kernel ends the moment the next step begins. HTA_DISABLE_NS_ROUNDING=1 keeps HTA from rounding
events to whole microseconds.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

hta = pytest.importorskip("hta", reason="HolisticTraceAnalysis is not installed (scripts/setup installs it)")
import hta_check  # noqa: E402  (sets HTA_DISABLE_NS_ROUNDING=1 before HTA parses anything)

BASE = 1_764_000_000_000_000_000  # CUPTI-clock-sized ns: offsets must survive the trip through doubles
STEPS = 4
COMPUTE_STREAM, COMM_STREAM = 7, 13
GEMM = "void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8>(Params)"
NCCL = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
OPT = "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<AdamW>(...)"
NVJET = "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT"  # cuBLASLt's GEMM: launched with cuLaunchKernelEx


def binary():
    path = os.environ.get("DDPBENCH_BINARY") or str(ROOT / "build" / "ddpbench")
    if not os.access(path, os.X_OK):
        pytest.skip(f"no ddpbench binary at {path} (set DDPBENCH_BINARY; ctest does)")
    return path


class Rank:
    """One rank's activity document (profile/activity.h), built call by call."""

    def __init__(self, rank, world_size):
        self.rank = rank
        self.thread = 4000 + rank
        self.corr = 0
        self.doc = {"rank": rank, "world_size": world_size, "device_name": "NVIDIA H200",
                    "kernels": [], "memcpys": [], "memsets": [], "memory": [], "ranges": [], "api_calls": []}

    def range(self, name, start, end):
        self.doc["ranges"].append({"start": start, "end": end, "thread": self.thread, "name": name})

    def call(self, name, start, end, cbid, driver=False):
        self.corr += 1
        self.doc["api_calls"].append({"start": start, "end": end, "thread": self.thread, "correlation": self.corr,
                                      "cbid": cbid, "driver": driver, "name": name})
        return self.corr

    def kernel(self, name, stream, start, end, launch, driver=False):
        corr = self.call("cuLaunchKernelEx" if driver else "cudaLaunchKernel", *launch,
                         cbid=652 if driver else 211, driver=driver)
        self.doc["kernels"].append({"start": start, "end": end, "device": self.rank, "stream": stream,
                                    "correlation": corr, "name": name, "grid": [132, 1, 1], "block": [256, 1, 1]})

    def memcpy(self, start, end, launch, nbytes):
        corr = self.call("cudaMemcpyAsync", *launch, cbid=41)
        self.doc["memcpys"].append({"start": start, "end": end, "device": self.rank, "stream": COMPUTE_STREAM,
                                    "correlation": corr, "bytes": nbytes, "kind": "HtoD"})

    def memset(self, start, end, launch, nbytes):
        corr = self.call("cudaMemsetAsync", *launch, cbid=51)
        self.doc["memsets"].append({"start": start, "end": end, "device": self.rank, "stream": COMPUTE_STREAM,
                                    "correlation": corr, "bytes": nbytes})


def build_rank(rank):
    """Returns the activity document and the step starts S_0 .. S_STEPS (S_k+1 = end of step k)."""
    r = Rank(rank, 2)
    starts = [BASE + 10_000]
    for k in range(STEPS):
        starts.append(starts[-1] + 1_000_000 + 1_237 * k + 311 * rank)
    for k in range(STEPS):
        s, e = starts[k], starts[k + 1]
        r.range("step", s, e)
        if k == 0:
            # The first batch is launched before the first step and lands the moment it begins.
            r.range("data", BASE, BASE + 10_000)
            r.memcpy(s, s + 20_003, (BASE + 4_000, BASE + 5_000), 8 << 20)
        else:
            r.range("data", s, s + 3_000)
            r.memcpy(s + 2_500, s + 22_503, (s + 1_000, s + 2_000), 8 << 20)
        r.range("forward", s + 3_000, s + 400_000)
        r.kernel(GEMM, COMPUTE_STREAM, s + 30_000, s + 130_017, (s + 3_100, s + 3_500))
        r.kernel(GEMM, COMPUTE_STREAM, s + 130_017, s + 250_000, (s + 4_100, s + 4_500))  # queued behind the first
        # The host comes late: launched after the stream ran dry, a host wait of 52 us.
        r.kernel(GEMM, COMPUTE_STREAM, s + 302_000, s + 390_000 + 97 * rank, (s + 300_000, s + 300_400))
        r.range("backward", s + 400_000, s + 800_000)
        r.kernel(NVJET, COMPUTE_STREAM, s + 400_500, s + 700_000, (s + 400_100, s + 400_300), driver=True)
        r.range("allreduce", s + 600_000, s + 600_900)
        # NCCL launches through the driver API; rank 1 reaches the collective 20 us later.
        r.kernel(NCCL, COMM_STREAM, s + 650_000 + 20_000 * rank, s + 760_000, (s + 600_100, s + 600_600), driver=True)
        r.kernel(GEMM, COMPUTE_STREAM, s + 720_000, s + 790_000, (s + 700_100, s + 700_400))
        r.range("optimizer", s + 800_000, e)
        r.memset(s + 800_500, s + 801_500, (s + 800_100, s + 800_200), 4096)
        r.kernel(OPT, COMPUTE_STREAM, s + 810_000, e, (s + 800_300, s + 800_400))
        r.call("cudaStreamSynchronize", s + 810_100, e - 5, cbid=131)
    return r.doc, starts


def union(spans):
    total, cur = 0, None
    for a, b in sorted(spans):
        if cur is None or a > cur[1]:
            if cur:
                total += cur[1] - cur[0]
            cur = [a, b]
        else:
            cur[1] = max(cur[1], b)
    return total + (cur[1] - cur[0] if cur else 0)


def expected(doc, lo, hi):
    """The figures by construction over [lo, hi), from the records directly (nothing crosses lo or hi)."""
    inside = lambda x: lo <= x["start"] and x["end"] <= hi
    compute = [(k["start"], k["end"]) for k in doc["kernels"] if inside(k) and not k["name"].startswith("nccl")]
    comm = [(k["start"], k["end"]) for k in doc["kernels"] if inside(k) and k["name"].startswith("nccl")]
    mem = [(m["start"], m["end"]) for m in doc["memcpys"] + doc["memsets"] if inside(m)]
    busy = union(compute + comm + mem)
    overlapped = union(compute) + union(comm) - union(compute + comm)
    return {"compute_ns": union(compute), "non_compute_ns": busy - union(compute), "idle_ns": (hi - lo) - busy,
            "busy_ns": busy, "overlap_pctg": round(100.0 * overlapped / union(comm), 2)}


def host_waits(doc, lo, hi):
    """HTA's host wait on the compute stream: gaps before an event whose launch began after the
    previous event on the stream had ended."""
    calls = {c["correlation"]: c for c in doc["api_calls"]}
    events = sorted((e for e in doc["kernels"] + doc["memcpys"] + doc["memsets"]
                     if e["stream"] == COMPUTE_STREAM and lo <= e["start"] and e["end"] <= hi), key=lambda e: e["start"])
    return sum(e["start"] - p["end"] for p, e in zip(events, events[1:]) if calls[e["correlation"]]["start"] > p["end"])


def analyze_and_load(tmp, docs, warmup):
    (tmp / "ranks").mkdir()
    for rank, doc in docs.items():
        (tmp / "ranks" / f"rank{rank}.activity.json").write_text(json.dumps(doc))
    out = subprocess.run([binary(), "analyze", str(tmp / "ranks"), "--warmup", str(warmup), "--out",
                          str(tmp / "profile.json"), "--traces", str(tmp / "traces")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads((tmp / "profile.json").read_text()), hta_check.load(tmp / "traces"), out.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hta")
    docs, starts = {}, {}
    for rank in (0, 1):
        docs[rank], starts[rank] = build_rank(rank)
    profile, analyzer, stdout = analyze_and_load(tmp, docs, warmup=0)
    return {"tmp": tmp, "docs": docs, "starts": starts, "profile": profile, "analyzer": analyzer, "stdout": stdout}


def test_traces_folder_holds_only_the_traces_and_each_rank_loads_as_itself(run):
    assert sorted(p.name for p in (run["tmp"] / "traces").iterdir()) == ["rank0.trace.json", "rank1.trace.json"]
    assert "traces (Perfetto, Holistic Trace Analysis): " + str(run["tmp"] / "traces") in run["stdout"]
    t = run["analyzer"].t
    assert sorted(t.get_ranks()) == [0, 1]
    for rank in (0, 1):
        assert t.meta_data[rank]["distributedInfo"]["rank"] == rank
        assert t.meta_data[rank]["deviceProperties"][0]["name"] == "NVIDIA H200"
    # One base time for both ranks, the earliest record of either.
    assert t.meta_data[0]["baseTimeNanoseconds"] == t.meta_data[1]["baseTimeNanoseconds"] == BASE
    # ProfilerStep#N from the step ranges: HTA's iterations, the last one left out as HTA does.
    assert run["analyzer"].get_profiler_steps() == [0, 1, 2]
    assert t.get_iterations(0) == t.get_iterations(1) == [0, 1, 2]


def test_temporal_breakdown_and_overlap_equal_ddpbench_and_the_known_answers(run):
    # HTA's default selection: no cutting, its whole window.
    figures = hta_check.hta_figures(run["analyzer"])
    for rank in (0, 1):
        starts = run["starts"][rank]
        known = expected(run["docs"][rank], starts[0], starts[STEPS - 1])
        hta_r = figures[rank]
        assert hta_r["kernel_span_ns"] == pytest.approx(starts[STEPS - 1] - starts[0], abs=0.5), "the windows coincide"
        for key in ("compute_ns", "non_compute_ns", "idle_ns", "busy_ns"):
            assert hta_r[key] == pytest.approx(known[key], abs=0.5), (rank, key)
        assert hta_r["overlap_pctg"] == known["overlap_pctg"]
        # ddpbench's analysis of the same records, steps 0 .. STEPS-2.
        prof = next(r for r in run["profile"]["ranks"] if r["rank"] == rank)
        dd = hta_check.ddpbench_figures(prof, list(range(STEPS - 1)))
        assert dd["compute_ns"] == known["compute_ns"]
        assert dd["exposed_comm_ns"] + dd["other_ns"] == known["non_compute_ns"]
        assert dd["idle_ns"] == known["idle_ns"]
        assert dd["overlap_pctg"] == known["overlap_pctg"]
    # Known answers worth a glance: 20 us exposed on rank 0, none on rank 1 (whose collective starts
    # later and ends with the others); 52 us host wait per step.
    assert run["profile"]["ranks"][0]["steps"][1]["exposed_comm_ns"] == 20_000


def test_hta_check_compares_on_the_measured_window(run):
    report, ok = hta_check.compare(run["analyzer"], run["profile"])
    assert ok, hta_check.render(report, {})
    assert report["hta_ranks"] == [0, 1]
    assert report["classified_differently"] == []
    assert {r: rep["steps"] for r, rep in report["ranks"].items()} == {0: STEPS - 1, 1: STEPS - 1}
    # With a warm-up step the window shrinks and HTA, cut to it, still agrees.
    profile = json.loads(json.dumps(run["profile"]))
    for r in profile["ranks"]:
        r["steps"][0]["warmup"] = True
    report, ok = hta_check.compare(run["analyzer"], profile)
    assert ok, hta_check.render(report, {})
    assert report["ranks"][0]["steps"] == STEPS - 2


def test_hta_check_cuts_a_run_like_trace_to_the_measured_steps(tmp_path):
    """As a real run: GPU work before the first step (the matrix-rate measurement), a warm-up step,
    kernels running on past their step's end into the next, idle host time between steps. HTA's own
    window then spans all of that; hta_check cuts its events to ddpbench's measured steps, where the
    figures agree again."""
    docs = {}
    for rank in (0, 1):
        doc, starts = build_rank(rank)
        r = Rank(rank, 2)
        r.doc, r.corr = doc, max(c["correlation"] for c in doc["api_calls"])
        # Before anything: a burst of GEMMs from a thread with no ranges at all.
        r.thread = 9000
        for i in range(3):
            r.kernel(GEMM, COMPUTE_STREAM, BASE - 900_000 + i * 200_000, BASE - 750_000 + i * 200_000,
                     (BASE - 990_000 + i * 1_000, BASE - 989_000 + i * 1_000))
        # Step 1's last kernel runs 40 us into step 2 (on a stream of its own).
        s1, s2 = starts[1], starts[2]
        r.thread = 4000 + rank
        r.kernel(GEMM, 21, s2 - 60_000, s2 + 40_000, (s1 + 900_000, s1 + 900_300))
        # A kernel whose name HTA takes for a synchronization (".*Sync"), in the warm-up step only.
        r.kernel("void grid_Sync_kernel()", COMPUTE_STREAM, starts[0] + 260_000, starts[0] + 270_000,
                 (starts[0] + 255_000, starts[0] + 255_500))
        # A kernel launched through an API the collector does not record, in the warm-up step.
        doc["kernels"].append({"start": starts[0] + 280_000, "end": starts[0] + 290_000, "device": rank,
                               "stream": COMPUTE_STREAM, "correlation": 999_999, "name": "void untraced()"})
        # Idle host time between steps 2 and 3: step 2's range ends 30 us early.
        for g in doc["ranges"]:
            if g["name"] == "step" and g["start"] == s2:
                g["end"] -= 30_000
        docs[rank] = doc
    profile, analyzer, stdout = analyze_and_load(tmp_path, docs, warmup=1)
    report, ok = hta_check.compare(analyzer, profile)
    assert ok, hta_check.render(report, {})
    assert report["ranks"][0]["steps"] == STEPS - 2  # steps 1 and 2: measured, without the last
    assert report["classified_differently"] == ["void grid_Sync_kernel()"]
    links = hta_check.launch_links(analyzer)
    assert links[0]["device_events_without_launch"] == 1
    assert links[0]["most_common_without_launch"] == [("void untraced()", 1)]
    # ddpbench's analysis finds the same one, and says so on the screen.
    for r in profile["ranks"]:
        assert r["launches"]["without_launch"] == 1
        assert r["launches"]["most_common_without_launch"] == [{"name": "void untraced()", "count": 1}]
    assert "WARNING: 1 of " in stdout and "most often untraced x1" in stdout, stdout
    # Uncut, HTA's window holds the warm-up step and the burst before it: the figures differ there.
    uncut = hta_check.hta_figures(analyzer)[0]
    dd = hta_check.ddpbench_figures(profile["ranks"][0], hta_check.compared_steps(profile["ranks"][0]))
    assert uncut["compute_ns"] > dd["compute_ns"] + 3 * 150_000


def test_without_launch_records_hta_keeps_every_device_event(tmp_path):
    """DDPBENCH_PROFILE_LAUNCHES=0: no launch calls, so no ProfilerStep either (HTA would drop all
    device work it cannot tie to a launch in a step); HTA's figures then cover the whole trace."""
    docs = {}
    for rank in (0, 1):
        docs[rank], _ = build_rank(rank)
        docs[rank]["api_calls"] = []
    profile, analyzer, _ = analyze_and_load(tmp_path, docs, warmup=1)
    figures = hta_check.hta_figures(analyzer)
    for rank in (0, 1):
        events = docs[rank]["kernels"] + docs[rank]["memcpys"] + docs[rank]["memsets"]
        lo, hi = min(e["start"] for e in events), max(e["end"] for e in events)
        known = expected(docs[rank], lo, hi)
        for key in ("compute_ns", "non_compute_ns", "idle_ns"):
            assert figures[rank][key] == pytest.approx(known[key], abs=0.5), (rank, key)
        assert figures[rank]["overlap_pctg"] == known["overlap_pctg"]
    report, ok = hta_check.compare(analyzer, profile)
    assert ok, hta_check.render(report, {})


def test_idle_time_breakdown_reports_host_wait(run):
    df, _ = run["analyzer"].get_idle_time_breakdown(ranks=[0, 1], visualize=False)
    for rank in (0, 1):
        starts = run["starts"][rank]
        rows = df[(df["rank"] == rank) & (df["stream"] == COMPUTE_STREAM)]
        host_wait = rows.loc[rows["idle_category"] == "host_wait", "idle_time"].sum()
        known = host_waits(run["docs"][rank], starts[0], starts[STEPS - 1])
        assert known >= 3 * 52_000
        assert host_wait * 1000 == pytest.approx(known, abs=1), rank


def test_every_device_event_has_its_launch(run):
    links = hta_check.launch_links(run["analyzer"])
    assert links == {r: {"device_events_without_launch": 0, "most_common_without_launch": [],
                         "correlations_on_several_calls": 0} for r in (0, 1)}
    # HTA itself tied each GEMM launched through the driver to its cuLaunchKernelEx and so to its step
    # (a device event whose launch it cannot find gets no iteration, and is dropped).
    for rank in (0, 1):
        df = run["analyzer"].t.get_trace(rank)
        names = run["analyzer"].t.symbol_table.get_sym_id_map()
        gemms = df[df["name"] == names[NVJET]]
        assert len(gemms) == STEPS - 1  # the last step's is left out with its step, as HTA does
        launches = df.loc[gemms["index_correlation"]]
        assert (launches["name"] == names["cuLaunchKernelEx"]).all()
        assert sorted(gemms["iteration"]) == list(range(STEPS - 1))
    # ddpbench's own analysis says the same, and prints no warning.
    for r in run["profile"]["ranks"]:
        assert r["launches"]["without_launch"] == 0 and r["launches"]["api_calls"] > 0
    assert "no launch record" not in run["stdout"]


def test_launch_statistics_link_every_launch_to_its_kernel(run):
    stats = run["analyzer"].get_cuda_kernel_launch_stats(ranks=[0], visualize=False)[0]
    # cudaLaunchKernel, cudaMemcpyAsync and cudaMemsetAsync of the steps HTA keeps (the driver's
    # cuLaunchKernelEx, cuBLASLt's and NCCL's, is not among the names HTA 0.5.0 counts here, though it
    # links the kernels to it: see test_every_device_event_has_its_launch).
    last_step = run["starts"][0][STEPS - 1]
    counted = [c for c in run["docs"][0]["api_calls"]
               if c["start"] < last_step and c["name"] in ("cudaLaunchKernel", "cudaMemcpyAsync", "cudaMemsetAsync")]
    assert len(counted) == (STEPS - 1) * 7
    assert len(stats) == len(counted)
    assert (stats["launch_delay"] >= 0).all()
    first = stats.sort_values("correlation").iloc[0]  # the first memcpy: launched 4 us, landing 5 us later
    assert first["cpu_duration"] == pytest.approx(1.0)
    assert first["launch_delay"] == pytest.approx(5.0)


def test_gpu_annotations_and_memory_bandwidth(run):
    analyses = hta_check.run_analyses(run["analyzer"], run["profile"])
    rows = {(r["rank"], r["name"]): r for r in analyses["gpu_user_annotation_breakdown"]["summary"]}
    # forward launched its three GEMMs onto one stream: 30 us to 390 us (+97 ns on rank 1) of each step.
    assert rows[(0, "forward")]["mean (us)"] == pytest.approx(360.0)
    assert rows[(1, "forward")]["mean (us)"] == pytest.approx(360.097)
    assert rows[(0, "forward")]["sum (us)"] == pytest.approx(3 * 360.0)
    bw = analyses["memory_bandwidth_gbps_mean"]["summary"]
    assert bw["rank 0 Memcpy HtoD"] == pytest.approx((8 << 20) / 20_003)  # bytes per ns = GB/s
    assert bw["rank 0 Memset"] == pytest.approx(4096 / 1_000)


def test_critical_path_and_stragglers_run(run):
    analyses = hta_check.run_analyses(run["analyzer"], run["profile"])
    for name, res in analyses.items():
        assert res["ok"], f"{name}: {res.get('error')}\n{res.get('trace')}"
    cp = analyses["critical_path"]["summary"]
    assert set(cp) == {0, 1}
    assert all(r["nodes"] > 0 for r in cp.values())
    stragglers = analyses["stragglers"]["summary"]
    assert stragglers["profiler_steps"] == [0, 1, 2]
    # HTA's metric, the late start of the dominant collective: rank 1 reaches it 20 us after rank 0.
    assert stragglers["potential_stragglers"] == [1]
    # Today's NCCL kernel names (ncclDevKernel_*) are not what HTA 0.5.0's straggler analysis looks
    # for; hta_check says so and runs HTA's algorithm with them read as the old names.
    assert "ncclKernel" in stragglers["hta_default"]


def test_perfetto_trace_processor_loads_the_traces(run):
    """Only where a trace_processor_shell binary is at hand: PyPI's `perfetto` package downloads one on
    first use, which CI machines (and GPU hosts) cannot."""
    shell = os.environ.get("DDPBENCH_TRACE_PROCESSOR", "")
    if not shell or not os.access(shell, os.X_OK):
        pytest.skip("Perfetto's trace processor: set DDPBENCH_TRACE_PROCESSOR to a trace_processor_shell binary "
                    "(PyPI's perfetto package would download it, which these machines cannot)")
    tp_mod = pytest.importorskip("perfetto.trace_processor", reason="PyPI package perfetto is not installed")
    for rank in (0, 1):
        doc = run["docs"][rank]
        tp = tp_mod.TraceProcessor(trace=str(run["tmp"] / "traces" / f"rank{rank}.trace.json"),
                                   config=tp_mod.TraceProcessorConfig(bin_path=shell))
        try:
            slices = {row.name: row.n for row in tp.query("select name, count(*) as n from slice group by name")}
            flows = next(iter(tp.query("select count(*) as n from flow"))).n
        finally:
            tp.close()
        assert slices["ProfilerStep#0"] == 1
        assert slices["cudaLaunchKernel"] == sum(c["name"] == "cudaLaunchKernel" for c in doc["api_calls"])
        assert slices[NCCL] == STEPS
        launched = len(doc["kernels"]) + len(doc["memcpys"]) + len(doc["memsets"])
        assert flows == launched
