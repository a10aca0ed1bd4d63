#!/usr/bin/env python3
"""Holistic Trace Analysis (HTA) on a folder of ddpbench traces, against ddpbench's own analysis of the
same records (its profile JSON), on the same window.

Usage: hta_check.py TRACE_DIR PROFILE_JSON [--out FILE.json]
  TRACE_DIR     a run's traces/ folder (rank<k>.trace.json only)
  PROFILE_JSON  the `profile` section of a result (or a whole result.json, or `ddpbench analyze`'s
                profile.json) from the same records

The window: the measured steps (ddpbench's warm-up left out) except the last, whose launches HTA
leaves out by default. HTA's events are cut to those steps, then its temporal breakdown and
communication/computation overlap run on what is left, so that both count the same nanoseconds:
  HTA compute           = ddpbench compute
  HTA non-compute       = ddpbench exposed communication + other (memcpy/memset alone)
  HTA busy              = ddpbench busy (HTA's kernel_time - idle_time)
  steps - HTA busy      = ddpbench idle (HTA's own idle counts from the first to the last kernel only)
  HTA overlap %         = ddpbench overlapped / communication, rounded as HTA rounds it
Differences are reported in nanoseconds; HTA sums float microseconds, so long traces can differ by a
few nanoseconds of rounding. Besides: HTA's idle-time breakdown (host wait, kernel wait, other), its
CUDA launch statistics, critical path of one measured step and straggler analysis, run as a user
would run them. Exit status 1 when a comparison differs by more than --tolerance-ns or an analysis fails.
Needs HolisticTraceAnalysis (pip) and HTA_DISABLE_NS_ROUNDING=1, which this script sets.
"""
import argparse
import copy
import json
import math
import os
import sys
import traceback

# HTA otherwise rounds every event to whole microseconds (ceil start, floor end).
os.environ["HTA_DISABLE_NS_ROUNDING"] = "1"


def load(trace_dir):
    from hta.trace_analysis import TraceAnalysis

    return TraceAnalysis(trace_dir=str(trace_dir))


def profile_section(doc):
    """The profile section of a result document, or the document itself when it is one."""
    return doc["profile"] if "profile" in doc else doc


def compared_steps(rank_profile):
    """Indices of the steps compared: measured (not warm-up), without the last."""
    steps = rank_profile["steps"]
    measured = [s["index"] for s in steps if not s["warmup"]]
    return measured[:-1]


def _gpu_events_in_windows(analyzer, rank, windows_ns):
    """HTA's GPU events of one rank (stream != -1) cut to the windows, in HTA's time."""
    import pandas as pd

    t = analyzer.t
    df = t.traces[rank]
    base = t.meta_data[rank]["baseTimeNanoseconds"]
    gpu = df[df["stream"].ne(-1)]
    end = gpu["ts"] + gpu["dur"]
    parts = []
    for lo_ns, hi_ns in windows_ns:
        # The same arithmetic HTA's parser applied: (ns - base) / 1000 read from the trace, minus min_ts.
        lo = (lo_ns - base) / 1000.0 - t.min_ts
        hi = (hi_ns - base) / 1000.0 - t.min_ts
        inside = gpu[(gpu["ts"] < hi) & (end > lo)].copy()
        inside["ts"] = inside["ts"].clip(lower=lo)
        inside["end"] = end.loc[inside.index].clip(upper=hi)
        inside["dur"] = inside["end"] - inside["ts"]
        parts.append(inside[inside["dur"] > 0])
    return pd.concat(parts) if parts else gpu.iloc[0:0]


def hta_figures(analyzer, windows_by_rank=None):
    """Per rank: HTA's temporal breakdown and overlap, in ns, on HTA's own selection of events, or,
    with windows_by_rank ({rank: [(start_ns, end_ns), ...]}), on its GPU events cut to those windows."""
    from hta.analyzers.breakdown_analysis import BreakdownAnalysis
    from hta.analyzers.communication_analysis import CommunicationAnalysis

    t = analyzer.t
    if windows_by_rank is not None:
        t = copy.copy(analyzer.t)
        t.traces = {r: _gpu_events_in_windows(analyzer, r, w) for r, w in windows_by_rank.items()}
    temporal = BreakdownAnalysis.get_temporal_breakdown(t, visualize=False)
    overlap = CommunicationAnalysis.get_comm_comp_overlap(t, visualize=False)
    out = {}
    for _, row in temporal.iterrows():
        rank = int(row["rank"])
        ns = {k: float(row[f"{k}(us)"]) * 1000.0 for k in ("idle_time", "compute_time", "non_compute_time", "kernel_time")}
        pctg = float(overlap.loc[overlap["rank"] == rank, "comp_comm_overlap_pctg"].iloc[0])
        out[rank] = {
            "compute_ns": ns["compute_time"],
            "non_compute_ns": ns["non_compute_time"],
            "idle_ns": ns["idle_time"],
            "kernel_span_ns": ns["kernel_time"],
            "busy_ns": ns["kernel_time"] - ns["idle_time"],
            "overlap_pctg": pctg,
        }
    return out


def ddpbench_figures(rank_profile, indices):
    """Sums of ddpbench's per-step figures over the given step indices."""
    steps = {s["index"]: s for s in rank_profile["steps"]}
    keys = ("step_ns", "busy_ns", "compute_ns", "comm_ns", "exposed_comm_ns", "overlapped_comm_ns", "other_ns", "idle_ns")
    total = {k: sum(steps[i][k] for i in indices) for k in keys}
    comm = total["comm_ns"]
    total["overlap_pctg"] = round(100.0 * total["overlapped_comm_ns"] / comm, 2) if comm else math.nan
    total["windows"] = [(steps[i]["start"], steps[i]["end"]) for i in indices]
    return total


def comparison_rows(hta, dd):
    """(what, HTA, ddpbench) per compared figure; ns except the overlap in %."""
    return [
        ("compute", hta["compute_ns"], dd["compute_ns"]),
        ("non-compute = exposed comm + other", hta["non_compute_ns"], dd["exposed_comm_ns"] + dd["other_ns"]),
        ("busy", hta["busy_ns"], dd["busy_ns"]),
        ("idle over the steps = steps - busy", dd["step_ns"] - hta["busy_ns"], dd["idle_ns"]),
        ("overlap %", hta["overlap_pctg"], dd["overlap_pctg"]),
    ]


def _equal(a, b, tolerance):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return abs(a - b) <= tolerance


def classified_differently(analyzer):
    """Kernel names that HTA and ddpbench put in different classes (ddpbench: communication is a name
    starting with nccl, every other kernel is compute; HTA: its own patterns), which would make the
    compute and non-compute rows differ by those kernels' time."""
    from hta.utils.utils import get_kernel_type

    t = analyzer.t
    table = t.symbol_table.get_sym_table()
    kernel_cat = t.symbol_table.get_sym_id_map().get("kernel", -1)
    out = set()
    for df in t.traces.values():
        for name_id in df.loc[df["cat"].eq(kernel_cat), "name"].unique():
            name = table[name_id]
            ours = "COMMUNICATION" if name.startswith("nccl") else "COMPUTATION"
            if get_kernel_type(name) != ours:
                out.add(name)
    return sorted(out)


def launch_links(analyzer):
    """Per rank, from the trace files as written: device events with no launch call of theirs (HTA
    drops those from every analysis once a trace has ProfilerSteps; a launch API the collector does
    not record shows here) and correlation ids that more than one call carries."""
    from collections import Counter

    from hta.common.trace_file import read_trace

    out = {}
    for rank, path in analyzer.t.trace_files.items():
        events = read_trace(path)["traceEvents"]
        calls = Counter(e["args"]["correlation"] for e in events
                        if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver"))
        unlaunched = Counter(e["name"] for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
                             and e["args"]["correlation"] not in calls)
        out[rank] = {"device_events_without_launch": sum(unlaunched.values()),
                     "most_common_without_launch": unlaunched.most_common(5),
                     "correlations_on_several_calls": sum(1 for n in calls.values() if n > 1)}
    return out


def compare(analyzer, profile, tolerance_ns=1.0):
    """Compares per rank; returns (report dict, all equal)."""
    hta_ranks = sorted(analyzer.t.get_ranks())
    prof_ranks = {r["rank"]: r for r in profile["ranks"]}
    report = {"hta_ranks": hta_ranks, "ddpbench_ranks": sorted(prof_ranks), "ranks": {},
              "classified_differently": classified_differently(analyzer)}
    ok = hta_ranks == sorted(prof_ranks)
    dd = {r: ddpbench_figures(prof_ranks[r], compared_steps(prof_ranks[r])) for r in hta_ranks if r in prof_ranks}
    hta = hta_figures(analyzer, {r: d["windows"] for r, d in dd.items()}) if dd else {}
    for r in dd:
        rows = []
        for what, h, d in comparison_rows(hta[r], dd[r]):
            tol = 0.005 if what.startswith("overlap") else tolerance_ns
            equal = _equal(h, d, tol)
            ok = ok and equal
            rows.append({"what": what, "hta": h, "ddpbench": d, "equal": equal})
        report["ranks"][r] = {"steps": len(dd[r]["windows"]), "rows": rows}
    return report, ok


class _NcclDevKernelAsNcclKernel:
    """A view of HTA's symbol table in which NCCL >= 2.19's kernel names (ncclDevKernel_*) read as the
    ncclKernel_* that HTA 0.5.0's straggler analysis looks for; ids are unchanged."""

    def __init__(self, table):
        self._names = ["ncclKernel" + n[len("ncclDevKernel"):] if n.startswith("ncclDevKernel") else n
                       for n in table.get_sym_table()]

    def get_sym_table(self):
        return self._names

    def get_sym_id_map(self):
        return {n: i for i, n in enumerate(self._names)}


def run_analyses(analyzer, profile):
    """HTA's other analyses as a user runs them; {name: summary or error}."""
    results = {}
    ranks = sorted(analyzer.t.get_ranks())

    def attempt(name, f):
        try:
            results[name] = {"ok": True, "summary": f()}
        except Exception as e:  # reported, not raised: one failing analysis should not hide the others
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=4)}

    def idle():
        df, _ = analyzer.get_idle_time_breakdown(ranks=ranks, visualize=False)
        return df.groupby(["rank", "idle_category"])["idle_time"].sum().reset_index().to_dict("records")

    def launches():
        stats = analyzer.get_cuda_kernel_launch_stats(ranks=ranks, visualize=False)
        return {int(r): {"launches": int(len(df)), "launch_delay_us_p50": float(df["launch_delay"].median()) if len(df) else None,
                         "cpu_duration_us_p50": float(df["cpu_duration"].median()) if len(df) else None}
                for r, df in stats.items()}

    def queue():
        q = analyzer.get_queue_length_summary(ranks=ranks)
        return None if q is None else json.loads(q.reset_index().to_json(orient="records"))

    def critical_path():
        out = {}
        steps = analyzer.t.get_iterations(ranks[0])
        prof = {r["rank"]: r for r in profile["ranks"]}
        first_measured = prof[ranks[0]]["warmup"] if ranks[0] in prof else 0
        instance = min(first_measured, max(len(steps) - 1, 0))
        for r in ranks:
            result = analyzer.critical_path_analysis(rank=r, annotation="ProfilerStep", instance_id=instance)
            if result is None:
                raise RuntimeError(f"rank {r}: HTA found no ProfilerStep annotation")
            graph, success = result
            if not success:
                raise RuntimeError(f"rank {r}: HTA's critical path analysis reported failure")
            summary = graph.summary()
            out[r] = {"instance": instance, "nodes": graph.number_of_nodes(),
                      "bound_by_us": {str(k): float(v) for k, v in summary.items()}}
        return out

    def stragglers():
        out = {"profiler_steps": [int(s) for s in analyzer.get_profiler_steps()]}
        try:
            out["potential_stragglers"] = [int(r) for r in analyzer.get_potential_stragglers(num_candidates=1)]
        except ValueError as e:
            names = analyzer.t.symbol_table.get_sym_table()
            if any(n.startswith("ncclKernel") for n in names) or not any(n.startswith("ncclDevKernel") for n in names):
                raise
            # HTA 0.5.0's straggler metric takes only kernels named ncclKernel* as communication;
            # NCCL 2.19 and later name them ncclDevKernel*, so it finds none (in Kineto's traces too).
            # Its own algorithm again, through its documented hook, with those names read as ncclKernel*.
            from hta.analyzers.straggler import find_stragglers_with_late_start_comm_kernels

            def modern_nccl(df, symbol_table, n, visualize):
                return find_stragglers_with_late_start_comm_kernels(df, _NcclDevKernelAsNcclKernel(symbol_table), n, visualize)

            out["hta_default"] = f"{type(e).__name__}: {e} (no kernel named ncclKernel*)"
            out["potential_stragglers"] = [int(r) for r in analyzer.get_potential_stragglers(
                num_candidates=1, straggler_identification_impl=modern_nccl)]
            out["note"] = "HTA's straggler algorithm with ncclDevKernel* read as ncclKernel*"
        return out

    def memory_bandwidth():
        summary = analyzer.get_memory_bw_summary(ranks=ranks)
        if summary is None or len(summary) == 0:
            return None
        mean = summary["memory_bw_gbps"]["mean"]
        return {f"rank {r} {name}": float(v) for (r, name), v in mean.items()}

    def gpu_annotations():
        df = analyzer.get_gpu_user_annotation_breakdown(visualize=False, use_gpu_annotation=True)
        return None if df is None else df[["rank", "name", "sum (us)", "mean (us)"]].to_dict("records")

    attempt("launch_links", lambda: launch_links(analyzer))
    attempt("idle_time_breakdown", idle)
    attempt("memory_bandwidth_gbps_mean", memory_bandwidth)
    attempt("gpu_user_annotation_breakdown", gpu_annotations)
    attempt("cuda_kernel_launch_stats", launches)
    attempt("queue_length_summary", queue)
    attempt("critical_path", critical_path)
    attempt("stragglers", stragglers)
    return results


def render(report, analyses):
    lines = [f"HTA loaded ranks {report['hta_ranks']}; ddpbench analysed ranks {report['ddpbench_ranks']}"]
    if report.get("classified_differently"):
        lines.append(f"kernels HTA and ddpbench classify differently: {report['classified_differently'][:10]}")
    for r, rep in sorted(report["ranks"].items()):
        lines.append(f"rank {r}, {rep['steps']} steps (measured, without the last):")
        for row in rep["rows"]:
            unit = "" if row["what"].startswith("overlap") else " ns"
            mark = "equal" if row["equal"] else f"DIFFERS by {row['hta'] - row['ddpbench']:.3f}"
            lines.append(f"  {row['what']:<38} HTA {row['hta']:>16.3f}{unit}  ddpbench {row['ddpbench']:>16.3f}{unit}  {mark}")
    for name, res in analyses.items():
        text = json.dumps(res["summary"], default=str) if res["ok"] else "FAILED " + res["error"]
        lines.append(f"{name}: {text[:600]}")
    return "\n".join(lines)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace_dir")
    ap.add_argument("profile_json")
    ap.add_argument("--out", help="also write the comparison and analyses as JSON here")
    ap.add_argument("--tolerance-ns", type=float, default=1.0)
    a = ap.parse_args(argv)
    profile = profile_section(json.load(open(a.profile_json)))
    analyzer = load(a.trace_dir)
    report, ok = compare(analyzer, profile, a.tolerance_ns)
    analyses = run_analyses(analyzer, profile)
    print(render(report, analyses))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"comparison": report, "analyses": analyses}, f, indent=1, default=str)
    return 0 if ok and all(r["ok"] for r in analyses.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
