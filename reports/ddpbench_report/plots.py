"""The report's figures (matplotlib, Agg): each function draws one PNG and returns its file name and
a caption, or None when the documents hold nothing for it (no profile, no MFU, no kernels)."""
from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import compare, stats  # noqa: E402
from .kernels import kernel_rows  # noqa: E402
from .load import key_name, profile_medians  # noqa: E402

DPI = 110
BREAKDOWN_COLOURS = {"compute": "#4c72b0", "exposed communication": "#dd8452", "other": "#937860", "idle": "#c7c7c7"}


def footer_text(docs: list) -> str:
    """Hardware and versions of the documents, each value once."""
    def values(get):
        seen = []
        for d in docs:
            try:
                v = get(d.fingerprint)
            except (KeyError, IndexError, TypeError):
                v = None
            if v not in (None, "") and str(v) not in seen:
                seen.append(str(v))
        return "/".join(seen) if seen else "?"
    named = [
        ("", lambda f: f["hardware_key"] if f.get("hardware_key") else f["gpus"][0]["name"]),
        ("driver ", lambda f: f["driver"]),
        ("CUDA ", lambda f: f["runtime"]["cuda_runtime"]),
        ("NCCL ", lambda f: f["runtime"]["nccl"]),
        ("torch ", lambda f: f["runtime"]["libtorch"]),
        ("commit ", lambda f: f["git_commit"]),
        ("source ", lambda f: f["source_digest"]),  # cmake/build_info.cmake; absent in older documents
    ]
    # What a CPU run does not have (driver, CUDA, NCCL) is left out, not shown as unknown.
    parts = [name + v for name, get in named for v in [values(get)] if v != "?"]
    pkgs = {}
    for d in docs:
        for k, v in (d.fingerprint.get("python_packages") or {}).items():
            pkgs.setdefault(k, v)
    if pkgs:
        parts.append(", ".join(f"{k} {v}" for k, v in sorted(pkgs.items())))
    return " | ".join(parts)


class Palette:
    """One colour per trainer label, the same in every figure."""
    def __init__(self, labels):
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        self.colours = {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}

    def __call__(self, label):
        return self.colours.setdefault(label, "#333333")


def _figure(rows, cols, width_per=5.2, height_per=3.6):
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.4, width_per * cols), height_per * rows + 0.9), squeeze=False)
    return fig, axes


def _finish(fig, title, footer, out_dir, name):
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.text(0.5, 0.005, footer, ha="center", va="bottom", fontsize=7, color="#555555", wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(os.path.join(out_dir, name), dpi=DPI)
    plt.close(fig)
    return name


def _grid(n):
    cols = min(3, n)
    return math.ceil(n / cols), cols


def _hide_unused(axes, used):
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def _series_title(group):
    w, b, g, s = group
    return f"{w} (batch {b} x {g} accum x {s} tokens per GPU)"


def _gpu_axis(ax, counts):
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts)
    ax.set_xticklabels([str(c) for c in counts])
    ax.minorticks_off()
    ax.set_xlabel("GPUs (ranks)")


def _by_gpu_count(groups, palette, points, decorate, ylabel):
    """One panel per workload geometry, one line per trainer over GPU counts: points(line) gives
    [(nproc, median, low, high)], decorate(ax, lines) adds the panel's reference lines."""
    rows, cols = _grid(len(groups))
    fig, axes = _figure(rows, cols)
    for ax, (group, lines) in zip(axes.flat, sorted(groups.items())):
        for label, line in lines.items():
            pts = points(line)
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]],
                            marker="o", capsize=3, color=palette(label), label=label)
        decorate(ax, lines)
        _gpu_axis(ax, sorted({n for line in lines.values() for n in line}))
        ax.set_ylabel(ylabel)
        ax.set_title(_series_title(group), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    _hide_unused(axes, len(groups))
    return fig


def _agg_points(field, scale=1.0):
    def points(line):
        aggs = [(n, line[n].agg(field)) for n in sorted(line)]
        return [(n, a.median * scale, a.lo * scale, a.hi * scale) for n, a in aggs if a is not None]
    return points


def _bar_panel(ax, ticks, names, ylabel, title):
    """Axis labels of a bar panel, its legend outside on the right, where it hides no bar."""
    ax.set_xticks(ticks)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def throughput(model, palette, footer, out_dir):
    groups = compare.series(model)
    if not groups:
        return None

    def ideal(ax, lines):
        for label, line in lines.items():
            one = line[1].agg("tokens_per_s_per_gpu") if 1 in line else None
            if one is not None:  # a cell whose documents carry no rate (a kernels cell) has no line
                ax.axhline(one.median, ls="--", lw=1, color=palette(label), alpha=0.7)
        ax.plot([], [], ls="--", color="grey", label="ideal (1-GPU rate)")
        ax.set_ylim(bottom=0)

    fig = _by_gpu_count(groups, palette, _agg_points("tokens_per_s_per_gpu"), ideal, "tokens/s per GPU")
    name = _finish(fig, "Tokens/s per GPU against GPU count (median over repeats, bars: range)", footer, out_dir, "throughput.png")
    return name, "Tokens/s per GPU; the dashed line of each trainer is its 1-GPU rate (perfect scaling)."


def scaling(model, palette, footer, out_dir):
    groups = {g: lines for g, lines in compare.series(model).items() if any(compare.scaling(l) for l in lines.values())}
    if not groups:
        return None

    def points(line):
        eff = compare.scaling(line)
        return [(1, 100.0, 100.0, 100.0)] + [(n, e[0] * 100, e[1] * 100, e[2] * 100) for n, e in sorted(eff.items())] if eff else []

    def ideal(ax, lines):
        ax.axhline(100, ls="--", color="black", lw=1, label="ideal (100%)")
        lo = min(min(l.get_ydata()) for l in ax.get_lines())
        ax.set_ylim(min(80, lo - 5), 105)

    fig = _by_gpu_count(groups, palette, points, ideal, "scaling efficiency (%)")
    name = _finish(fig, "Scaling efficiency: tokens/s per GPU at N GPUs / at 1 GPU", footer, out_dir, "scaling.png")
    return name, "Scaling efficiency at a fixed per-GPU batch (DESIGN.md): 100% is perfect."


def breakdown(model, palette, footer, out_dir):
    bars = []  # (workload, label, nproc, medians)
    for c in model.cells:
        parts = [profile_medians(d) for d in c.docs]
        parts = [p for p in parts if p]
        if parts:
            mean = {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}
            bars.append((c.key, c.label, mean))
    if not bars:
        return None
    workloads = sorted({k[0] for k, _, _ in bars})
    fig, axes = _figure(1, len(workloads), width_per=max(5.2, 0.9 * len(bars) / len(workloads) + 2))
    for ax, w in zip(axes.flat, workloads):
        mine = sorted([b for b in bars if b[0][0] == w], key=lambda b: (b[0][1], b[1]))
        x = list(range(len(mine)))
        bottom = [0.0] * len(mine)
        for part, colour in BREAKDOWN_COLOURS.items():
            vals = [b[2][part] for b in mine]
            ax.bar(x, vals, bottom=bottom, color=colour, label=part, width=0.6)
            bottom = [u + v for u, v in zip(bottom, vals)]
        for xi, b, top in zip(x, mine, bottom):
            ax.annotate(f"{top:.1f} ms\n(exposed comm. {b[2]['exposed communication']:.2f} ms)", (xi, top), ha="center",
                        va="bottom", fontsize=7)
        _bar_panel(ax, x, [f"{b[1]}\n{b[0][1]} GPU" for b in mine], "median step time (ms), mean over ranks", w)
        ax.set_xlim(-0.5 - max(0, 3 - len(mine)) / 2, len(mine) - 0.5 + max(0, 3 - len(mine)) / 2)
        ax.margins(y=0.15)
    name = _finish(fig, "Where a step's time goes (CUPTI profile)", footer, out_dir, "breakdown.png")
    return name, ("Compute, exposed communication (NCCL kernels with no compute kernel running), other device work "
                  "and idle time per step; they add up to the step (harness/profile/analysis.h).")


def memory(model, palette, footer, out_dir):
    workloads = sorted({c.key[0] for c in model.cells if any(r.get("peak_allocated_bytes") for d in c.docs for r in d.ranks)})
    if not workloads:
        return None
    positions = max(sum(max(1, c.key[1]) + 2 for c in model.cells if c.key[0] == w) for w in workloads)
    fig, axes = _figure(len(workloads), 1, width_per=min(14.0, max(7.0, 0.4 * positions)))
    gib = 2.0 ** 30
    for ax, w in zip(axes.flat, workloads):
        cells = [c for c in model.cells if c.key[0] == w]
        cells.sort(key=lambda c: (c.key[1], c.label))
        x0 = 0.0
        ticks, names = [], []
        for c in cells:
            # The largest over repeats of each rank's peak: what a rank needs to fit.
            per_rank: dict = {}
            reserved: dict = {}
            for d in c.docs:
                for r in d.ranks:
                    per_rank[r.get("rank", 0)] = max(per_rank.get(r.get("rank", 0), 0), r.get("peak_allocated_bytes", 0))
                    reserved[r.get("rank", 0)] = max(reserved.get(r.get("rank", 0), 0), r.get("peak_reserved_bytes", 0))
            ranks = sorted(per_rank)
            xs = [x0 + i * 0.8 for i in range(len(ranks))]
            ax.bar(xs, [per_rank[r] / gib for r in ranks], width=0.7, color=palette(c.label),
                   label=c.label if c.label not in ax.get_legend_handles_labels()[1] else None)
            ax.scatter(xs, [reserved[r] / gib for r in ranks], marker="_", s=200, color="black", zorder=3,
                       label="reserved" if "reserved" not in ax.get_legend_handles_labels()[1] else None)
            ticks.append(sum(xs) / len(xs))
            names.append(f"{c.label}\n{c.key[1]} GPU")
            x0 = xs[-1] + 1.6
        _bar_panel(ax, ticks, names, "peak memory per rank (GiB)", w)
    name = _finish(fig, "Peak memory per rank (bars: allocated, ticks: reserved by the caching allocator)", footer, out_dir, "memory.png")
    return name, ("Peak allocated memory of each rank, one bar per rank in rank order, largest over repeats "
                  "(CPU runs: the process's peak resident memory).")


def _median_curve(cell):
    curves = cell.curves
    n = min(len(c) for c in curves)
    med = [stats.agg([c[i] for c in curves]).median for i in range(n)]
    lo = [min(c[i] for c in curves) for i in range(n)]
    hi = [max(c[i] for c in curves) for i in range(n)]
    return med, lo, hi


def loss(model, palette, footer, out_dir):
    by_key: dict = {}
    for c in model.cells:
        if c.curves:
            by_key.setdefault(c.key, []).append(c)
    if not by_key:
        return None
    paired = {id(p.candidate): p.baseline for _, ps in model.pairs for p in ps}
    # A row of difference panels under the curves only where some trainer has a baseline to differ from.
    per_key = 2 if paired else 1
    keys = sorted(by_key)
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(per_key * rows, cols, figsize=(max(6.4, 5.2 * cols), (5.6 if paired else 3.8) * rows + 0.9),
                             squeeze=False, gridspec_kw={"height_ratios": ([2, 1] if paired else [1]) * rows})
    for i, key in enumerate(keys):
        top = axes[per_key * (i // cols), i % cols]
        bottom = axes[per_key * (i // cols) + 1, i % cols] if paired else None
        for c in by_key[key]:
            med, lo, hi = _median_curve(c)
            steps = list(range(len(med)))
            top.plot(steps, med, color=palette(c.label), label=c.label, lw=1.4)
            if len(c.curves) > 1:
                top.fill_between(steps, lo, hi, color=palette(c.label), alpha=0.15)
            base = paired.get(id(c))
            if base is not None:
                bmed, _, _ = _median_curve(base)
                n = min(len(med), len(bmed))
                bottom.plot(range(n), [med[s] - bmed[s] for s in range(n)], color=palette(c.label),
                            label=f"{c.label} - {base.label}", lw=1.2)
        target = model.targets.get(key)
        if target is not None:
            top.axhline(target, ls=":", color="black", lw=1, label=f"target loss {target:.3f}")
        top.set_title(key_name(key), fontsize=9)
        top.set_ylabel("loss")
        top.grid(alpha=0.3)
        top.legend(fontsize=7)
        (bottom or top).set_xlabel("optimizer step")
        if bottom is not None:
            bottom.axhline(0, color="black", lw=0.8)
            bottom.set_ylabel("loss difference")
            bottom.grid(alpha=0.3)
            if bottom.get_legend_handles_labels()[0]:
                bottom.legend(fontsize=7)
            else:
                bottom.text(0.5, 0.5, "no baseline cell here", ha="center", va="center", transform=bottom.transAxes,
                            color="#777777")
    for j in range(len(keys), rows * cols):
        for k in range(per_key):
            axes[per_key * (j // cols) + k, j % cols].set_visible(False)
    title = "Loss curves (median over repeats, band: range)" + (" and differences from the baseline" if paired else "")
    name = _finish(fig, title, footer, out_dir, "loss.png")
    return name, "Per-step loss of every trainer on equal work" + (", and each one's difference from its baseline." if paired else ".")


def mfu(model, palette, footer, out_dir):
    groups = {g: lines for g, lines in compare.series(model).items()
              if any(c.agg("mfu") for line in lines.values() for c in line.values())}
    if not groups:
        return None
    fig = _by_gpu_count(groups, palette, _agg_points("mfu", 100.0), lambda ax, lines: ax.set_ylim(bottom=0), "MFU (%)")
    name = _finish(fig, "Model FLOPs utilisation against the bf16 matrix rate measured on each GPU", footer, out_dir, "mfu.png")
    return name, "MFU = model FLOPs per token x tokens/s per GPU / the bf16 matrix rate each rank measured (DESIGN.md)."


def time_to_loss(model, palette, footer, out_dir):
    keys = sorted({c.key for c in model.cells if c.agg("time_to_target_s")})
    if not keys:
        return None
    labels = []
    for c in model.cells:
        if c.label not in labels:
            labels.append(c.label)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(10, 1.1 * len(keys) * len(labels) + 4), 4.8))
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        cells = {c.key: c for c in model.cells if c.label == label}
        xs, tps, tts, gph = [], [], [], []
        for i, key in enumerate(keys):
            c = cells.get(key)
            t = c.agg("time_to_target_s") if c else None
            if c is None or t is None:
                continue
            xs.append(i + (j - (len(labels) - 1) / 2) * width)
            tps.append(c.agg("tokens_per_s_per_gpu").median)
            tts.append(t.median)
            gph.append(c.agg("gpu_hours_to_target").median)
        ax1.bar(xs, tps, width=width, color=palette(label), label=label)
        bars = ax2.bar(xs, tts, width=width, color=palette(label), label=label)
        for bar, h in zip(bars, gph):
            ax2.annotate(f"{h:.2g} GPU-h", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                         va="bottom", fontsize=6, rotation=90)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([f"{k[0]}\n{k[1]} GPU" for k in keys], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    ax1.set_ylabel("tokens/s per GPU")
    ax1.set_title("speed", fontsize=10)
    ax2.set_ylabel("seconds to the target loss")
    ax2.set_title("time to the loss every trainer reaches (equal work)", fontsize=10)
    ax2.margins(y=0.25)
    name = _finish(fig, "Speed beside time to a target loss", footer, out_dir, "time_to_loss.png")
    return name, ("Target: per cell, the highest of the trainers' minima of their 5-step trailing mean loss; time: the "
                  "steps up to the first step at or below it (warm-up steps counted at the median step time); "
                  "GPU-hours: that time x GPUs.")


def kernels(model, palette, footer, out_dir):
    rows = kernel_rows(model.kernels)
    if not rows:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(10, 0.6 * len(rows) + 6), 4.8))
    x = list(range(len(rows)))
    ax1.bar(x, [r.speedup for r in rows], color="#4c72b0")
    ax1.axhline(1, ls="--", color="black", lw=1, label="baseline (1x)")
    ax1.set_ylabel("speed-up of fused over baseline (x)")
    shares = [(i, r.copy_share) for i, r in enumerate(rows) if r.copy_share is not None]
    ax2.bar([i for i, _ in shares], [s * 100 for _, s in shares], color="#55a868")
    ax2.axhline(100, ls="--", color="black", lw=1, label="copy bandwidth")
    ax2.set_ylabel("achieved bandwidth, % of copy bandwidth")
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels([r.name for r in rows], rotation=30, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    name = _finish(fig, "Kernels: fused against baseline", footer, out_dir, "kernels.png")
    return name, "Speed-up (baseline time / fused time) and the fused kernel's bytes moved per second against the copy bandwidth."


ALL = [throughput, scaling, loss, time_to_loss, mfu, breakdown, memory, kernels]


def draw_all(model, docs, out_dir) -> list:
    labels = []
    for c in model.cells:
        if c.label not in labels:
            labels.append(c.label)
    palette = Palette(labels)
    footer = footer_text(docs)
    out = []
    for fn in ALL:
        got = fn(model, palette, footer, out_dir)
        if got:
            out.append(got)
    return out
