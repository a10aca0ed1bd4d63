"""Hand-made result documents with known figures, in the format harness/results writes, and helpers
that run the report and read its tables back."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "reports" / "report.py"
sys.path.insert(0, str(ROOT / "reports"))

FINGERPRINT = {
    "hardware_key": "2x NVIDIA H200 (NV18)", "driver": "580.159.04", "git_commit": "abc123def456",
    "gpus": [{"index": 0, "name": "NVIDIA H200"}],
    "runtime": {"cuda_runtime": "13.0", "nccl": "2.28.9", "libtorch": "2.11.0"},
}


def cell_doc(workload="w", trainer="builtin", nproc=1, tps_per_gpu=1000.0, p50=0.1, losses=(5.0, 4.0, 3.0),
             step_times=None, peak=2**30, mfu=None, repeat=None, cell_id=None, impl="baseline", state="ok",
             reason="", micro_batch=4, grad_accum=1, seq_len=64, warmup_steps=1, profile=None):
    """One cell document; per-step times default to p50 (warm-up steps to 10x p50)."""
    if step_times is None:
        step_times = [p50 * 10 if i < warmup_steps else p50 for i in range(len(losses))]
    steps = [{"step": i, "loss": x, "step_time_s": t, "tokens": int(tps_per_gpu * nproc * t),
              "grad_norm": 1.0 + i, "warmup": i < warmup_steps, "rank_step_time_s": [t] * nproc}
             for i, (x, t) in enumerate(zip(losses, step_times))]
    summary = {"tokens_per_s_per_gpu": tps_per_gpu, "tokens_per_s": tps_per_gpu * nproc, "step_time_p50_s": p50,
               "step_time_p95_s": p50 * 1.1, "peak_allocated_bytes": peak, "peak_reserved_bytes": peak + 2**20,
               "final_loss": losses[-1], "mfu": -1 if mfu is None else mfu}
    doc = {
        "schema_version": 1, "cell": f"{workload}/{trainer}/n{nproc}/b{micro_batch}/g{grad_accum}/s{seq_len}",
        "config": {"trainer": trainer, "impl": impl, "nproc": nproc, "micro_batch": micro_batch,
                   "grad_accum": grad_accum, "seq_len": seq_len, "mode": "lora", "preset": "tiny"},
        "fingerprint": FINGERPRINT, "status": {"state": state, **({"reason": reason} if reason else {})},
        "steps": steps if state == "ok" else [],
        "ranks": [{"rank": r, "peak_allocated_bytes": peak - r * 2**20, "peak_reserved_bytes": peak + 2**20}
                  for r in range(nproc)],
        "summary": summary if state == "ok" else {},
    }
    if cell_id is not None:
        doc["cell_id"] = cell_id
    if repeat is not None:
        doc["repeat"] = repeat
    if profile is not None:
        doc["profile"] = profile
    return doc


def write_run(folder: Path, docs: list, suite="hand-made") -> Path:
    """A run folder as `ddpbench run` writes it: run.json, cells/<file>.json."""
    (folder / "cells").mkdir(parents=True, exist_ok=True)
    index = {"suite": suite, "run_id": folder.name, "created": "2026-11-29T00:00:00Z", "cells": []}
    for i, d in enumerate(docs):
        file = f"cells/cell{i}.json"
        (folder / file).write_text(json.dumps(d))
        index["cells"].append({"name": d["cell"], "status": d["status"]["state"], "file": file})
    (folder / "run.json").write_text(json.dumps(index))
    return folder


def run_report(*args, check=True):
    """reports/report.py as a user runs it, in a process of its own."""
    r = subprocess.run([sys.executable, str(REPORT), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"report.py exited {r.returncode}: {r.stderr}")
    return r


def tables_only(*args):
    """The report in this process with no figures drawn: the tables are the same, in a fraction of the
    time (drawing is most of a report's cost). Returns the exit status."""
    from ddpbench_report import cli, plots
    saved = plots.ALL
    plots.ALL = []
    try:
        return cli.main([str(a) for a in args])
    finally:
        plots.ALL = saved


def tables(md_text: str) -> dict:
    """Markdown tables of report.md by the heading above them: a list of rows (dicts by column)."""
    out, heading, header = {}, None, None
    for line in md_text.splitlines():
        if line.startswith("#"):
            heading, header = line.lstrip("#").strip(), None
        elif line.startswith("|---"):
            continue
        elif line.startswith("| "):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if header is None:
                header = cells
                out.setdefault(heading, [])
            else:
                out[heading].append(dict(zip(header, cells)))
        else:
            header = None
    return out


def comparison(md_text: str, title: str) -> dict:
    """(cell, figure) -> row of a comparison table (the cell column is filled only on its first row)."""
    rows, cell = {}, None
    for row in tables(md_text)[title]:
        cell = row["cell"] or cell
        rows[(cell, row["figure"])] = row
    return rows


def binary():
    path = os.environ.get("DDPBENCH_BINARY") or str(ROOT / "build" / "ddpbench")
    return path if os.path.exists(path) else None
