"""Per-step scalars of every cell as TensorBoard event files, written with the `tensorboard` package's
framework-free writer (tensorboard.summary.Writer), one TensorBoard run per cell and repeat:
<run>/tensorboard/<cell_id as a path>/r<repeat>/, so that `tensorboard --logdir <run>` lists them."""
from __future__ import annotations

import os
import re
import shutil

SAFE = re.compile(r"[^A-Za-z0-9._/-]")


def available() -> bool:
    try:
        import tensorboard.summary  # noqa: F401
    except ImportError:
        return False
    return True


def cell_dir(cell_id: str, repeat: int) -> str:
    """cell_id "w/t/n1/b2/g2/s64#1a2b3c4d" -> "w/t/n1/b2/g2/s64-1a2b3c4d/r1" (no '..', nothing odd)."""
    parts = [p for p in SAFE.sub("_", cell_id.replace("#", "-")).split("/") if p not in ("", ".", "..")]
    return os.path.join(*parts, f"r{repeat}")


def scalars(doc) -> dict:
    """tag -> [(step, value)] for one cell run."""
    out: dict = {}

    def add(tag, step, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.setdefault(tag, []).append((step, float(value)))

    nproc = max(1, doc.nproc)
    for s in doc.steps:
        step = s.get("step", 0)
        add("loss", step, s.get("loss"))
        t = s.get("step_time_s")
        add("step_time_s", step, t)
        if t and s.get("tokens") is not None:
            add("tokens_per_s", step, s["tokens"] / t)
            add("tokens_per_s_per_gpu", step, s["tokens"] / t / nproc)
        add("grad_norm", step, s.get("grad_norm"))
        peak = s.get("mem_allocated_peak", s.get("peak_allocated_bytes"))
        if peak is not None:
            add("memory/peak_allocated_GiB", step, peak / 2**30)
    if "memory/peak_allocated_GiB" not in out and doc.steps:
        # Documents carry the run's peak, not one per step: one point at the last step.
        peak = doc.summary.get("peak_allocated_bytes")
        if peak is not None:
            add("memory/peak_allocated_GiB", doc.steps[-1].get("step", len(doc.steps) - 1), peak / 2**30)
    prof = doc.profile
    if prof and prof.get("ranks"):
        per_step: dict = {}
        for r in prof["ranks"]:
            for st in r.get("steps", []):
                per_step.setdefault(st.get("index", 0), []).append(st)
        for index, sts in sorted(per_step.items()):
            for field, tag in (("exposed_comm_ns", "profile/exposed_comm_ms"), ("compute_ns", "profile/compute_ms"),
                               ("idle_ns", "profile/idle_ms")):
                vals = [st.get(field) for st in sts if isinstance(st.get(field), (int, float))]
                if vals:
                    add(tag, index, sum(vals) / len(vals) / 1e6)
    return out


def write(docs, root_for) -> list:
    """Writes every ok document's scalars under root_for(doc)/tensorboard/; returns the folders.
    A tensorboard/ folder that a previous report wrote is replaced, not appended to."""
    from tensorboard.summary import Writer

    written, cleared = [], set()
    for d in docs:
        if not d.ok or not d.steps:
            continue
        root = os.path.join(root_for(d), "tensorboard")
        if root not in cleared:
            shutil.rmtree(root, ignore_errors=True)
            cleared.add(root)
        folder = os.path.join(root, cell_dir(d.cell_id, d.repeat))
        os.makedirs(folder, exist_ok=True)
        writer = Writer(folder)
        for tag, points in scalars(d).items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
        writer.close()
        written.append(folder)
    return written
