"""Kernel benchmark documents (Google Benchmark JSON, as bench/ writes them): speed-up of each
fused kernel over its baseline, and achieved bandwidth as a share of the copy bandwidth measured in
the same run.

Convention read here (reports/README.md): a benchmark's name has a path segment `baseline` or
`fused` (`BM_rmsnorm/fused/4096`, or `_fused`), the two otherwise equal, and optionally `liger`
(Liger-Kernel's same op, bench/kernels/liger_ops.py); `bytes_per_second` is the
bytes that must move over the time; the copy bandwidth is a benchmark whose name contains `copy`
(its `bytes_per_second`), or a `copy_bytes_per_second` counter on the entry itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

IMPL = re.compile(r"(?<=[/_])(baseline|fused|liger)(?=$|[/_])")
# Google Benchmark's run settings in a name (bench_kernels': op/preset/pass/impl/iterations:10/manual_time).
SETTINGS = re.compile(r"/(iterations|repeats|min_time|threads):[^/]*|/(manual_time|real_time|process_time)(?=$|/)")
UNIT_S = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass
class KernelRow:
    name: str                  # the benchmark's name with the impl segment taken out
    baseline_s: float
    fused_s: float
    fused_bytes_per_s: float | None
    copy_bytes_per_s: float | None
    liger_s: float | None = None

    @property
    def liger_speedup(self) -> float | None:
        return self.liger_s / self.fused_s if self.liger_s else None

    @property
    def speedup(self) -> float:
        return self.baseline_s / self.fused_s

    @property
    def copy_share(self) -> float | None:
        if self.fused_bytes_per_s and self.copy_bytes_per_s:
            return self.fused_bytes_per_s / self.copy_bytes_per_s
        return None


def _entries(doc: dict) -> list:
    bench = [b for b in doc.get("benchmarks", []) if isinstance(b, dict) and "name" in b and "real_time" in b]
    # With repetitions, Google Benchmark adds aggregates: the median stands for the repeats.
    medians = [b for b in bench if b.get("aggregate_name") == "median"]
    if medians:
        return [dict(b, name=b.get("run_name", b["name"])) for b in medians]
    return [b for b in bench if b.get("run_type", "iteration") == "iteration"]


def l2_timing(kernel_docs: list) -> str | None:
    """How the entries were timed, from their `l2_flush` counter (bench_kernels and liger_ops.py write
    it: 1 where L2 was flushed before each call): "cold", "warm", "mixed", or None where no entry
    says (other programs' output)."""
    flags = {bool(b["l2_flush"]) for _path, doc in kernel_docs for b in _entries(doc) if "l2_flush" in b}
    if not flags:
        return None
    return "mixed" if len(flags) > 1 else "cold" if True in flags else "warm"


def kernel_rows(kernel_docs: list) -> list:
    rows = []
    for _path, doc in kernel_docs:
        entries = _entries(doc)
        copies = [b.get("bytes_per_second") for b in entries if "copy" in b["name"].lower() and b.get("bytes_per_second")]
        copy_bw = max(copies) if copies else None
        by_name: dict = {}
        for b in entries:
            name = SETTINGS.sub("", b["name"])
            m = IMPL.search(name)
            if not m:
                continue
            base = name[: m.start()] + "*" + name[m.end():]
            seconds = float(b["real_time"]) * UNIT_S.get(b.get("time_unit", "ns"), 1e-9)
            by_name.setdefault(base, {})[m.group(1)] = (seconds, b)
        for name, impls in sorted(by_name.items()):
            if "baseline" in impls and "fused" in impls and impls["fused"][0] > 0:
                fused = impls["fused"][1]
                rows.append(KernelRow(name, impls["baseline"][0], impls["fused"][0], fused.get("bytes_per_second"),
                                      fused.get("copy_bytes_per_second", copy_bw),
                                      impls["liger"][0] if "liger" in impls else None))
    return rows
