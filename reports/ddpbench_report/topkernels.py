"""Where the time goes, kernel by kernel: each side's top kernels (profile.ranks[k].top_kernels,
harness/profile/analysis.h) side by side, grouped by what the kernel's name says it is, as nsys's
cuda_gpu_kern_sum or HTA's kernel breakdown would show them for a candidate and its baseline.

A side's figures are medians over its samples, one sample per profiled rank of each repeat. A
profile lists only its top kernels (15 by default): a kernel missing from a sample's list took at
most the smallest listed time there (0 when the list holds every kernel), so a side's figure for it
is a range [low, high] rather than one value, and the difference then a range too.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from .load import key_name

# (category, name fragments, lower case), first match wins: NCCL and our own kernels before the
# GEMM fragments that their names may contain, attention before "cutlass" (fmha_cutlass...), the
# fp32 GEMMs on CUDA cores (cuBLAS's *_ffma_* tiles, sgemm) before the tensor-core ones, copies and
# casts (TensorIterator's copy kernels) before the other elementwise kernels.
CATEGORIES = [
    ("NCCL", ("nccl",)),
    ("fused (ddpbench::kernels)", ("ddpbench::kernels",)),
    ("attention", ("flash", "fmha", "sdpa")),
    ("GEMM fp32 on CUDA cores", ("_ffma_", "sgemm")),
    ("GEMM", ("nvjet", "cutlass", "xmma", "gemm")),
    ("copy / cast", ("copy_kernel", "batchedcopy")),
    ("elementwise", ("elementwise_kernel",)),
    ("reduction", ("reduce_kernel", "reduction")),
    ("optimizer", ("multi_tensor_apply",)),
]
OTHER = "other"
MAX_ROWS = 15


def category(name: str) -> str:
    low = name.lower()
    for cat, fragments in CATEGORIES:
        if any(f in low for f in fragments):
            return cat
    return OTHER


_NOISE = [re.compile(p) for p in (r"\(anonymous namespace\)::", r"::\{lambda\([^)]*\)#\d+\}", r"::operator\(\)\(\) const",
                                   r"\bat::native::", r"\bat::", r"\bc10::", r"\bstd::", r"binary_internal::")]


def display_name(name: str, width: int = 110) -> str:
    """A kernel's name as a table shows it: without the namespaces and lambda descriptors that make
    TensorIterator's names hundreds of characters long; what tells kernels apart (the functor, the
    types, the tile) stays, cut at `width` characters."""
    for p in _NOISE:
        name = p.sub("", name)
    return name if len(name) <= width else name[: width - 3] + "..."


@dataclass
class Sample:
    """One profiled rank of one repeat, per measured step."""
    kernels: dict          # full name -> (ns_per_step, count_per_step, short name)
    total_ns: float        # all kernels' time
    launches: float
    complete: bool         # the list holds every kernel: a missing one took no time
    floor_ns: float        # the most a kernel missing from the list can have taken

    def time(self, name: str) -> tuple:
        """(low, high) ns per step of one kernel."""
        if name in self.kernels:
            v = self.kernels[name][0]
            return v, v
        return 0.0, 0.0 if self.complete else self.floor_ns


def samples_of(doc) -> list:
    """The samples of a document: its profiled ranks that carry per-step top kernels (profiles
    before `top_kernels` had ns_per_step give none)."""
    out = []
    for r in (doc.profile or {}).get("ranks") or []:
        top, kt = r.get("top_kernels"), r.get("kernel_time")
        steps = (r.get("summary") or {}).get("measured_steps")
        if not isinstance(top, list) or not isinstance(kt, dict) or not isinstance(steps, (int, float)) or steps <= 0:
            continue
        if not all(isinstance(k.get("ns_per_step"), (int, float)) for k in top):
            continue
        kernels = {}
        for k in top:
            name = k.get("name") or k.get("short_name") or "?"
            kernels[name] = (float(k["ns_per_step"]), float(k.get("count_per_step") or 0), k.get("short_name") or name)
        total = float(kt.get("total_ns") or 0) / steps
        floor = min((v[0] for v in kernels.values()), default=total)
        out.append(Sample(kernels, total, float(kt.get("launches") or 0) / steps,
                          int(kt.get("distinct") or 0) <= len(kernels), floor))
    return out


@dataclass
class Range:
    """A side's median ns per step, low and high alike when every sample listed the kernel."""
    lo: float
    hi: float

    @property
    def exact(self) -> bool:
        return self.lo == self.hi

    def __sub__(self, other: "Range") -> "Range":
        return Range(self.lo - other.hi, self.hi - other.lo)


def _median_range(pairs) -> Range:
    pairs = list(pairs)
    # The median is monotone in every sample: the medians of the lows and of the highs bound it.
    return Range(statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs))


@dataclass
class Side:
    label: str
    samples: list

    def time(self, name: str) -> Range:
        return _median_range(s.time(name) for s in self.samples)

    def launches(self, name: str):
        """Median launches per step, or None unless every sample listed the kernel."""
        if all(name in s.kernels for s in self.samples):
            return statistics.median(s.kernels[name][1] for s in self.samples)
        return None

    def category_time(self, cat: str) -> float:
        """Median over samples of the time of the sample's listed kernels of one category."""
        return statistics.median(sum(v[0] for n, v in s.kernels.items() if category(n) == cat) for s in self.samples)

    def category_launches(self, cat: str) -> float:
        return statistics.median(sum(v[1] for n, v in s.kernels.items() if category(n) == cat) for s in self.samples)

    def unlisted(self) -> float:
        """Median over samples of the kernel time outside the sample's top list."""
        return statistics.median(max(0.0, s.total_ns - sum(v[0] for v in s.kernels.values())) for s in self.samples)

    def unlisted_launches(self) -> float:
        return statistics.median(max(0.0, s.launches - sum(v[1] for v in s.kernels.values())) for s in self.samples)

    @property
    def total(self) -> float:
        return statistics.median(s.total_ns for s in self.samples)

    @property
    def total_launches(self) -> float:
        return statistics.median(s.launches for s in self.samples)

    def names(self) -> dict:
        return {n: v[2] for s in self.samples for n, v in s.kernels.items()}


def side_of(cell, label: str) -> Side | None:
    samples = [s for d in cell.docs for s in samples_of(d)]
    return Side(label, samples) if samples else None


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.2f}"


def _ms_range(r: Range) -> str:
    if r.exact:
        return _ms(r.lo)
    return f"< {_ms(r.hi)}" if r.lo == 0 else f"{_ms(r.lo)} to {_ms(r.hi)}"


def _signed(ns: float) -> str:
    return f"{ns / 1e6:+.2f}"


def _diff(r: Range) -> str:
    return _signed(r.lo) if r.exact else f"{_signed(r.lo)} to {_signed(r.hi)}"


def _count(v) -> str:
    return "-" if v is None else f"{round(v, 1):g}"


def _share(ns: float, total: float) -> str:
    return f"{ns / total * 100:.1f}%" if total > 0 else "-"


def table(sides: list) -> tuple:
    """(header, rows) for one or two sides (candidate first): a category row (the sum of its listed
    kernels on each side) above the category's kernels among the largest MAX_ROWS of the union, the
    categories by the larger side's time; then the kernel time outside the top lists and in all."""
    two = len(sides) == 2
    header = ["kernel", "category"]
    for s in sides:
        header += [f"{s.label}: ms/step", f"{s.label}: share", f"{s.label}: launches/step"]
    if two:
        header.append("difference ms/step")

    names: dict = {}
    for s in sides:
        names.update(s.names())
    times = {n: [s.time(n) for s in sides] for n in names}
    shown = sorted(names, key=lambda n: (-max(r.lo for r in times[n]), n))[:MAX_ROWS]
    cats = {category(n) for n in names}
    cat_time = {c: [s.category_time(c) for s in sides] for c in cats}

    rows = []
    for cat in sorted(cats, key=lambda c: (-max(cat_time[c]), c)):
        row = [f"{cat} (all listed)", cat]
        for s, t in zip(sides, cat_time[cat]):
            row += [_ms(t), _share(t, s.total), _count(s.category_launches(cat))]
        if two:
            row.append(_signed(cat_time[cat][0] - cat_time[cat][1]))
        rows.append(row)
        for n in sorted((n for n in shown if category(n) == cat), key=lambda n: (-max(r.lo for r in times[n]), n)):
            row = [display_name(names[n]), cat]
            for s, r in zip(sides, times[n]):
                row += [_ms_range(r), _share(r.lo, s.total) if r.exact else "-", _count(s.launches(n))]
            if two:
                row.append(_diff(times[n][0] - times[n][1]))
            rows.append(row)
    for label, t, l in (("kernels outside the top lists", Side.unlisted, Side.unlisted_launches),
                        ("all kernels", lambda s: s.total, lambda s: s.total_launches)):
        row = [label, "-"]
        for s in sides:
            row += [_ms(t(s)), _share(t(s), s.total), _count(l(s))]
        if two:
            row.append(_signed(t(sides[0]) - t(sides[1])))
        rows.append(row)
    return header, rows


NOTE = (
    "Per-kernel time over the measured steps of each side's CUPTI profile (profile.ranks[k].top_kernels, "
    "as nsys's cuda_gpu_kern_sum: concurrent kernels count twice): ms per step and launches per step, the "
    "median over repeats and ranks; share: of the side's kernel time. A category row sums the kernels its side's "
    "profile lists (a category by the kernel's name: GEMM fp32 on CUDA cores = cuBLAS's ffma tiles); below it "
    "the category's kernels among the {rows} largest of both sides' lists. A profile lists only its top kernels: "
    "where a side's profile did not list a kernel, its time there is at most the smallest time listed, shown "
    "as '< x' or 'x to y' (and the difference as a range); launches then '-'. Difference: candidate minus "
    "baseline.").format(rows=MAX_ROWS)


def blocks(model) -> list:
    """The report's blocks of this section: a table per compared pair with a profiled side (one
    side's table when only one side is profiled), and one for each profiled cell that is in no pair.
    Nothing when no cell's profile has per-step top kernels."""
    out = []
    paired = set()
    for title, pairs in model.pairs:
        for p in pairs:
            paired.update((id(p.candidate), id(p.baseline)))
            cand, base = side_of(p.candidate, p.candidate.label), side_of(p.baseline, p.baseline.label)
            sides = [s for s in (cand, base) if s]
            if sides:
                out.append(("h3", f"{title}: {key_name(p.candidate.key)}"))
                if len(sides) == 1:
                    missing = p.baseline if cand else p.candidate
                    out.append(("p", f"{missing.label} has no profile with per-step top kernels in this cell: "
                                     f"{sides[0].label}'s alone."))
                out.append(("table",) + table(sides))
    for c in model.cells:
        side = side_of(c, c.label) if id(c) not in paired else None
        if side:
            out.append(("h3", f"{c.label}: {key_name(c.key)}"))
            out.append(("table",) + table([side]))
    if not out:
        return []
    return [("h2", "Where the time goes: top kernels"), ("p", NOTE)] + out
