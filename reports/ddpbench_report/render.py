"""report.md and report.html from one list of blocks, so that both say the same; the HTML inlines
every image as a base64 data URI and loads nothing else (it opens from a file with no network)."""
from __future__ import annotations

import base64
import csv
import html
import os

from . import compare, stats, topkernels
from .kernels import kernel_rows
from .load import key_name, tidy_row
from .plots import footer_text
from .kernels import l2_timing  # a line of its own: the imports above change often

# Blocks: ("h1"|"h2"|"h3"|"p", text), ("table", header, rows), ("img", file, caption).


def _seconds(v):
    if abs(v) < 1e-3:
        return f"{v * 1e6:.1f} us"
    return f"{v * 1e3:.1f} ms" if abs(v) < 1 else f"{v:.2f} s"


FORMATS = {
    "rate": lambda v: f"{v:,.0f}" if abs(v) >= 10 else f"{v:.3g}",
    "seconds": _seconds,
    "bytes": lambda v: f"{v / 2**30:.2f} GiB" if abs(v) >= 2**30 else f"{v / 2**20:.1f} MiB",
    "percent": lambda v: f"{v * 100:.1f}%",
    "hours": lambda v: f"{v:.3g} h",
    "loss": lambda v: f"{v:.4f}",
    "ratio": lambda v: f"{v:.3f}x",
    "distance": lambda v: f"{v:.2e}",
    "bias": lambda v: f"{v:+.2e}",
    "count": lambda v: f"{v:g}",
}


def fmt(value, kind: str) -> str:
    """A figure as the tables show it; kind is one of FORMATS (compare.METRICS names each figure's)."""
    return "-" if value is None else FORMATS[kind](value)


def fmt_agg(a, kind: str) -> str:
    """median (low-high, n runs); a single run is its value alone."""
    if a is None:
        return "-"
    if a.n == 1:
        return fmt(a.median, kind)
    mid, lo, hi = fmt(a.median, kind), fmt(a.lo, kind), fmt(a.hi, kind)
    unit = " " + mid.rsplit(" ", 1)[-1] if " " in mid else ""
    if unit and lo.endswith(unit) and hi.endswith(unit):  # "65.2 ms (65.1-65.5, 3 runs)"
        lo, hi = lo[: -len(unit)], hi[: -len(unit)]
    return f"{mid} ({lo}-{hi}, {a.n} runs)"


def comparison_table(model, pairs) -> tuple:
    header = ["cell", "figure", "candidate", "baseline", "ratio", "verdict"]
    rows = []
    for p in pairs:
        first = True
        for name, field, direction, kind in compare.METRICS:
            c, b = p.candidate.agg(field), p.baseline.agg(field)
            if c is None and b is None:
                continue
            r = stats.ratio(c, b)
            rows.append([key_name(p.candidate.key) if first else "", name, fmt_agg(c, kind), fmt_agg(b, kind),
                         fmt(r, "ratio"), stats.verdict(c, b, direction) if direction else "-"])
            first = False
        dist, floor = compare.loss_distance(p), compare.loss_floor(model, p)
        if dist is not None:
            rows.append(["", "loss curve distance (A/A floor)", fmt(dist, "distance"),
                         f"floor {fmt(floor.value, 'distance')} ({floor.note})" if floor.value is not None else floor.note,
                         "-", stats.loss_verdict(dist, floor.value)])
        bias, bias_floor = compare.loss_bias(p), compare.bias_floor(model, p)
        if bias is not None:
            rows.append(["", "loss curve bias (mean difference)", fmt(bias, "bias"),
                         f"floor {fmt(bias_floor, 'distance')} (largest A/A bias)" if bias_floor is not None else "no A/A floor",
                         "-", stats.bias_verdict(bias, bias_floor)])
    return header, rows


def summary_table(model) -> tuple:
    """One line per compared cell: the ratios that decide, each with its verdict."""
    header = ["comparison", "cell", "tokens/s per GPU", "time to target loss", "peak memory", "loss curves", "loss bias"]
    rows = []
    for title, pairs in model.pairs:
        for p in pairs:
            line = [title, key_name(p.candidate.key)]
            for field, direction in (("tokens_per_s_per_gpu", stats.HIGHER), ("time_to_target_s", stats.LOWER),
                                     ("peak_allocated_bytes", stats.LOWER)):
                c, b = p.candidate.agg(field), p.baseline.agg(field)
                r = stats.ratio(c, b)
                line.append("-" if r is None else f"{fmt(r, 'ratio')}, {stats.verdict(c, b, direction)}")
            line.append(stats.loss_verdict(compare.loss_distance(p), compare.loss_floor(model, p).value))
            line.append(stats.bias_verdict(compare.loss_bias(p), compare.bias_floor(model, p)))
            rows.append(line)
    return header, rows


def cells_table(model) -> tuple:
    header = ["workload", "trainer", "GPUs", "batch/GPU", "runs", "tokens/s per GPU", "scaling", "step p50", "step p95",
              "peak allocated", "MFU", "final loss", "steps to target", "time to target"]
    rows = []
    eff = {}
    for lines in compare.series(model).values():
        for line in lines.values():
            for n, e in compare.scaling(line).items():
                eff[id(line[n])] = e[0]
    for c in model.cells:
        w, n, b, g, s = c.key
        rows.append([w, c.label, str(n), f"{b} x {g} x {s}", str(len(c.docs)),
                     fmt_agg(c.agg("tokens_per_s_per_gpu"), "rate"), fmt(eff.get(id(c)), "percent"),
                     fmt_agg(c.agg("step_time_p50_s"), "seconds"), fmt_agg(c.agg("step_time_p95_s"), "seconds"),
                     fmt_agg(c.agg("peak_allocated_bytes"), "bytes"), fmt_agg(c.agg("mfu"), "percent"),
                     fmt_agg(c.agg("final_loss"), "loss"), fmt_agg(c.agg("steps_to_target"), "count"),
                     fmt_agg(c.agg("time_to_target_s"), "seconds")])
    return header, rows


def blocks_for(model, docs, figures, sources: str) -> list:
    out = [("h1", "ddpbench report"), ("p", sources), ("p", "Hardware and versions: " + footer_text(docs))]
    if model.across_runs:
        out.append(("p", f"Candidate: {model.candidate}; baseline: {model.baseline} (cells matched by cell_id)."))
    elif model.baseline:
        out.append(("p", f"Candidate: {model.candidate}; baseline: {model.baseline} (cells of equal work matched by "
                         "workload, GPU count, micro-batch, accumulation and sequence length)."))
    else:
        out.append(("p", f"Only one trainer ({model.candidate or 'none'}) has ok cells: no comparison."))
    if model.pairs:
        out.append(("h2", "Summary"))
        out.append(("p", "Ratio of candidate to baseline (medians over repeats) and the noise verdict; the rule and every "
                         "figure are in the tables below the figures."))
        out.append(("table",) + summary_table(model))
    if figures:
        out.append(("h2", "Figures"))
    for name, caption in figures:
        out.append(("img", name, caption))
    out.append(("h2", "How differences are judged"))
    out.append(("p", stats.VERDICT_RULE))
    floors = compare.floor_rows(model)
    if floors:
        out.append(("h3", "A/A floors"))
        out.append(("p", "Each trainer's floor: the largest |loss difference| over the measured steps between its cell "
                         "and the cell's A/A twin (or between the cell's repeats); its bias: the largest |mean loss "
                         "difference| over the same pairs."))
        out.append(("table", ["cell", "trainer", "A/A twin", "floor", "bias"],
                    [[key_name(c.key), c.label, ", ".join(f"b{t.key[2]} g{t.key[3]} ({len(t.docs)} runs)" for t in twins),
                      fmt(f, "distance"), fmt(b, "distance")] for c, twins, f, b in floors]))
    for title, pairs in model.pairs:
        out.append(("h2", title))
        header, rows = comparison_table(model, pairs)
        out.append(("table", header, rows))
    out += topkernels.blocks(model)
    out.append(("h2", "All cells"))
    targets = ", ".join(f"{key_name(k)} {v:.4f}" for k, v in sorted(model.targets.items()) if v is not None)
    out.append(("p", "Median over repeats (range, number of runs). Scaling: tokens/s per GPU at N GPUs over the same "
                     "trainer's at 1 GPU, same per-GPU batch." + (f" Target loss per cell: {targets}." if targets else "")))
    out.append(("table",) + cells_table(model))
    if model.not_ok:
        out.append(("h2", "Cells that did not run to the end"))
        out.append(("table", ["cell", "repeat", "state", "reason", "document"],
                    [[d.cell_id, str(d.repeat), d.state, d.reason or "-", d.path] for d in model.not_ok]))
    krows = kernel_rows(model.kernels)
    if krows:
        out.append(("h2", "Kernels"))
        timing = {"cold": "Timed L2-cold: a buffer of twice the L2 cache written before each call, outside its timing.",
                  "warm": "Timed L2-warm: calls back to back, so working sets that fit in L2 stay there.",
                  "mixed": "Rows timed both L2-cold and L2-warm (runs of different settings): compare only alike."}
        how = l2_timing(model.kernels)
        if how:
            out.append(("p", timing[how]))
        head = ["kernel", "baseline", "fused", "speed-up", "fused GB/s", "share of copy bandwidth"]
        body = [[k.name, fmt(k.baseline_s, "seconds"), fmt(k.fused_s, "seconds"), fmt(k.speedup, "ratio"),
                 f"{k.fused_bytes_per_s / 1e9:.1f}" if k.fused_bytes_per_s else "-", fmt(k.copy_share, "percent")]
                for k in krows]
        if any(k.liger_s for k in krows):  # Liger-Kernel's same ops timed in the run
            head += ["liger", "fused vs liger"]
            for row, k in zip(body, krows):
                row += [fmt(k.liger_s, "seconds"), fmt(k.liger_speedup, "ratio")]
        out.append(("table", head, body))
    return out


def _md_cell(text: str) -> str:
    # "<" escaped: kernel names' template arguments (<float>) would otherwise be read as HTML tags.
    return str(text).replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def to_markdown(blocks) -> str:
    lines = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + b[1], ""]
        elif kind == "p":
            lines += [b[1], ""]
        elif kind == "table":
            header, rows = b[1], b[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{b[2]}]({b[1]})", "", f"*{b[2]}*", ""]
    return "\n".join(lines)


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #ddd; }
figure { margin: 1em 0 2em; }
figcaption { font-size: 13px; color: #555; }
.better { color: #1a7f37; font-weight: bold; }
.worse { color: #c62828; font-weight: bold; }
"""


def _html_cell(text: str) -> str:
    t = html.escape(str(text))
    if str(text).endswith(stats.BETTER):
        return f'<td class="better">{t}</td>'
    if str(text).endswith((stats.WORSE, "beyond A/A floor", "biased")):
        return f'<td class="worse">{t}</td>'
    return f"<td>{t}</td>"


def to_html(blocks, out_dir: str) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>ddpbench report</title>",
             f"<style>{STYLE}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "table":
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b[1]) + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(_html_cell(x) for x in row) + "</tr>" for row in b[2]]
            parts.append("</tbody></table>")
        elif kind == "img":
            with open(os.path.join(out_dir, b[1]), "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write(model, docs, figures, out_dir: str, sources: str) -> tuple:
    blocks = blocks_for(model, docs, figures, sources)
    md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(to_markdown(blocks))
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(to_html(blocks, out_dir))
    write_rows(model, docs, os.path.join(out_dir, "cells.csv"))
    return md_path, html_path


def write_rows(model, docs, path: str) -> None:
    """The tidy rows behind the tables, one per cell run (repeats apart, failed and skipped cells too),
    in SI units, for spreadsheets and plots of one's own."""
    rows = {id(d): r for c in model.cells + model.aa_cells for d, r in zip(c.docs, c.rows)}
    table = [rows.get(id(d)) or tidy_row(d) for d in docs]
    columns = list(dict.fromkeys(k for r in table for k in r))
    with open(path, "w", encoding="utf-8", newline="") as f:
        out = csv.DictWriter(f, columns)
        out.writeheader()
        out.writerows(table)
