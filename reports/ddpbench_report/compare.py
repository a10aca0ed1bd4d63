"""Cells grouped into repeats, series over GPU counts, and candidate-against-baseline pairs.

Within one run (--baseline TRAINER) the cells of two trainers that do equal work (same workload,
GPU count, micro-batch, accumulation and sequence length) are compared; across runs (--baseline RUN)
a cell is compared with the cell of the same cell_id in the baseline run (the same id without its
configuration hash when no exact match exists).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import stats
from .load import InputError, tidy_row

TRAINERS = ("builtin", "builtin-fused", "hf", "liger", "unsloth", "hf-loop")

# name, tidy-row field, direction, kind (how render formats it)
METRICS = [
    ("tokens/s per GPU", "tokens_per_s_per_gpu", stats.HIGHER, "rate"),
    ("step time p50", "step_time_p50_s", stats.LOWER, "seconds"),
    ("step time p95", "step_time_p95_s", stats.LOWER, "seconds"),
    ("peak memory allocated", "peak_allocated_bytes", stats.LOWER, "bytes"),
    ("MFU", "mfu", stats.HIGHER, "percent"),
    ("exposed communication (share of step)", "exposed_comm_fraction", stats.LOWER, "percent"),
    ("time to target loss", "time_to_target_s", stats.LOWER, "seconds"),
    ("GPU-hours to target loss", "gpu_hours_to_target", stats.LOWER, "hours"),
    ("final loss", "final_loss", stats.NEUTRAL, "loss"),
]


@dataclass
class Cell:
    """The repeats of one cell_id from one side (candidate or baseline runs)."""
    side: str            # "" within one run; "candidate" or "baseline" across runs
    label: str           # trainer name as shown (with the run's name across runs)
    trainer: str         # Doc.label
    cell_id: str
    key: tuple
    docs: list = field(default_factory=list)
    rows: list = field(default_factory=list)   # tidy rows, one per repeat, with time-to-target added

    def agg(self, name: str):
        return stats.agg(r.get(name) for r in self.rows)

    @property
    def curves(self) -> list:
        return [[s["loss"] for s in d.steps] for d in self.docs if d.steps]

    @property
    def measured_curves(self) -> list:
        """Losses of the measured steps (warm-up left out): what curve distances and floors compare."""
        return [[s["loss"] for s in d.steps if not s.get("warmup")] for d in self.docs if d.steps]


@dataclass
class Pair:
    candidate: Cell
    baseline: Cell


@dataclass
class Model:
    cells: list                 # every Cell with at least one ok repeat, A/A cells excluded
    aa_cells: list
    not_ok: list                # Docs that failed or were skipped
    pairs: list                 # [(title, [Pair])], the main comparison first
    targets: dict               # key -> target loss
    candidate: str
    baseline: str
    across_runs: bool
    kernels: list


def _short(run: str) -> str:
    return run.rstrip("/").split("/")[-1] or run


def group_cells(docs: list, side: str, run_name: str = "") -> tuple[list, list]:
    """Cells from ok documents (repeats together) and A/A cells."""
    by_id: dict = {}
    for d in docs:
        if d.ok:
            by_id.setdefault(d.cell_id, []).append(d)
    cells, aa = [], []
    labels_seen: dict = {}
    for cell_id, ds in by_id.items():
        ds.sort(key=lambda d: d.repeat)
        first = ds[0]
        label = first.label + (f" [{run_name}]" if run_name else "")
        cell = Cell(side, label, first.label, cell_id, first.key, ds, [tidy_row(d) for d in ds])
        (aa if first.aa else cells).append(cell)
        labels_seen.setdefault((label, first.key), []).append(cell)
    # Two configurations of one trainer on one geometry (a different lr, say): keep them apart.
    for group in labels_seen.values():
        if len(group) > 1:
            for c in group:
                c.label += ("#" + c.cell_id.split("#", 1)[1]) if "#" in c.cell_id else f" ({c.cell_id})"
    return cells, aa


def add_time_to_target(cells: list) -> dict:
    """Per equal-work key: the loss every trainer reaches, and each repeat's time to reach it."""
    targets = {}
    by_key: dict = {}
    for c in cells:
        by_key.setdefault(c.key, []).append(c)
    for key, group in by_key.items():
        curves = [curve for c in group for curve in c.curves]
        target = stats.loss_target(curves)
        targets[key] = target
        for c in group:
            for d, row in zip(c.docs, c.rows):
                t = stats.time_to_loss(d.steps, target, d.nproc) if target is not None else None
                row["steps_to_target"] = t.steps if t else None
                row["time_to_target_s"] = t.seconds if t else None
                row["gpu_hours_to_target"] = t.gpu_hours if t else None
    return targets


def default_candidate(labels: set) -> str:
    return "builtin-fused" if "builtin-fused" in labels else "builtin" if "builtin" in labels else sorted(labels)[0]


def default_baseline(labels: set, candidate: str) -> str | None:
    for name in ("hf", "builtin", "liger", "unsloth", "hf-loop"):
        if name in labels and name != candidate:
            return name
    others = sorted(labels - {candidate})
    return others[0] if others else None


def build(candidate_docs: list, baseline_docs: list | None, baseline_trainer: str | None,
          candidate_trainer: str | None, kernels: list) -> Model:
    across = baseline_docs is not None
    not_ok = [d for d in candidate_docs + (baseline_docs or []) if not d.ok]
    if across:
        cand_name = _short(candidate_docs[0].run) if candidate_docs else "candidate"
        base_name = _short(baseline_docs[0].run) if baseline_docs else "baseline"
        if cand_name == base_name:
            cand_name, base_name = "candidate", "baseline"
        cand_cells, aa1 = group_cells(candidate_docs, "candidate", cand_name)
        base_cells, aa2 = group_cells(baseline_docs, "baseline", base_name)
        cells, aa_cells = cand_cells + base_cells, aa1 + aa2
    else:
        cells, aa_cells = group_cells(candidate_docs, "")
    targets = add_time_to_target(cells)
    labels = {c.trainer for c in cells}
    pairs = []
    if across:
        candidate, baseline = cand_name, base_name
        exact = {c.cell_id: c for c in base_cells}
        loose: dict = {}
        for c in base_cells:
            loose.setdefault(c.cell_id.split("#", 1)[0], c)
        by_trainer: dict = {}
        for c in cand_cells:
            b = exact.get(c.cell_id) or loose.get(c.cell_id.split("#", 1)[0])
            if b is not None:
                by_trainer.setdefault(c.trainer, []).append(Pair(c, b))
        for trainer in sorted(by_trainer, key=_trainer_order):
            pairs.append((f"{trainer}: {cand_name} against {base_name}", by_trainer[trainer]))
        if cells and not pairs:
            raise InputError(f"no cell of {cand_name} has the cell_id of a cell in {base_name}: nothing to compare")
    else:
        if candidate_trainer and candidate_trainer not in labels:
            raise InputError(f"--candidate {candidate_trainer}: no ok cell of that trainer (trainers: {', '.join(sorted(labels)) or 'none'})")
        candidate = candidate_trainer or (default_candidate(labels) if labels else "")
        if baseline_trainer and baseline_trainer not in labels:
            raise InputError(f"--baseline {baseline_trainer}: no ok cell of that trainer (trainers: {', '.join(sorted(labels)) or 'none'})")
        baseline = baseline_trainer or default_baseline(labels, candidate) or ""
        if baseline and baseline == candidate:
            raise InputError(f"--baseline {baseline}: the same trainer as the candidate")
        if baseline:
            base_by_key = {c.key: c for c in cells if c.trainer == baseline}
            order = [candidate] + sorted(labels - {candidate, baseline}, key=_trainer_order)
            for trainer in order:
                ps = [Pair(c, base_by_key[c.key]) for c in cells if c.trainer == trainer and c.key in base_by_key]
                if ps:
                    pairs.append((f"{trainer} against {baseline}", ps))
            if candidate == "builtin-fused" and baseline != "builtin":
                # The internal comparison (--impl fused against baseline) comes with every report that has both.
                stock = {c.key: c for c in cells if c.trainer == "builtin"}
                ps = [Pair(c, stock[c.key]) for c in cells if c.trainer == candidate and c.key in stock]
                if ps:
                    pairs.insert(1, ("builtin-fused against builtin", ps))
    cells.sort(key=lambda c: (c.key[0], _trainer_order(c.trainer), c.side != "candidate", c.key[1:]))
    return Model(cells, aa_cells, not_ok, pairs, targets, candidate, baseline, across, kernels)


def _trainer_order(name: str):
    return (TRAINERS.index(name) if name in TRAINERS else len(TRAINERS), name)


def twins_of(model: Model, cell: Cell) -> list:
    """The A/A twins of a cell: the same trainer, run, workload, GPU count, sequence length and global
    batch, at another split into micro-batches."""
    w, n, b, g, s = cell.key
    return [aa for aa in model.aa_cells
            if aa.docs[0].trainer_label == cell.docs[0].trainer_label and aa.side == cell.side
            and (aa.key[0], aa.key[1], aa.key[4]) == (w, n, s) and aa.key[2] * aa.key[3] == b * g]


def _aa_pairs(model: Model, cell: Cell, measure) -> list:
    """`measure` between the cell and its A/A twins, and between the cell's own repeats (runs of
    identical work)."""
    out = stats.within_pairs(cell.measured_curves, measure)
    for aa in twins_of(model, cell):
        out += stats.over_pairs(aa.measured_curves, cell.measured_curves, measure)
    return out


def trainer_floor(model: Model, cell: Cell) -> float | None:
    """A trainer's A/A floor in a cell: the largest distance over its A/A pairs. None: none measured."""
    dists = _aa_pairs(model, cell, stats.curve_distance)
    return max(dists) if dists else None


def trainer_bias(model: Model, cell: Cell) -> float | None:
    """A trainer's A/A bias in a cell: the largest |mean difference| over its A/A pairs."""
    biases = _aa_pairs(model, cell, stats.curve_bias)
    return max(abs(b) for b in biases) if biases else None


def bias_floor(model: Model, pair: Pair) -> float | None:
    """The floor a pair's bias is judged by: the largest A/A bias of any trainer at the pair's cells of
    equal work. Every twin samples the same rounding noise of the workload, whatever its trainer."""
    biases = [trainer_bias(model, c) for c in model.cells if c.key in (pair.candidate.key, pair.baseline.key)]
    biases = [b for b in biases if b is not None]
    return max(biases) if biases else None


@dataclass
class LossFloor:
    value: float | None   # the larger of the two sides' floors; None when either is missing
    note: str             # whose floor it is, or which side has none


def loss_floor(model: Model, pair: Pair) -> LossFloor:
    """The floor a pair's curve distance is judged by: the larger of the two trainers' own floors
    (their kernels may round differently: each is measured, none assumed), named."""
    c, b = trainer_floor(model, pair.candidate), trainer_floor(model, pair.baseline)
    missing = [p.label for p, f in ((pair.candidate, c), (pair.baseline, b)) if f is None]
    if missing:
        return LossFloor(None, "no A/A floor for " + " and ".join(missing))
    whose = pair.candidate if c > b else pair.baseline
    return LossFloor(max(c, b), f"{whose.label}'s")


def loss_distance(pair: Pair) -> float | None:
    d = stats.over_pairs(pair.candidate.measured_curves, pair.baseline.measured_curves)
    return stats.agg(d).median if d else None


def loss_bias(pair: Pair) -> float | None:
    """Candidate minus baseline: the median over pairs of repeats of the mean loss difference."""
    b = stats.over_pairs(pair.candidate.measured_curves, pair.baseline.measured_curves, stats.curve_bias)
    return stats.agg(b).median if b else None


def floor_rows(model: Model) -> list:
    """(cell, twins, floor, bias) for every cell with an A/A twin: each trainer's stated floors."""
    out = []
    for c in model.cells:
        twins = twins_of(model, c)
        if twins:
            out.append((c, twins, trainer_floor(model, c), trainer_bias(model, c)))
    return out


def series(model: Model) -> dict:
    """(workload, micro-batch, accumulation, seq-len) -> {label: {nproc: Cell}}: the lines of the
    scaling plots (scaling holds the per-GPU batch fixed)."""
    out: dict = {}
    for c in model.cells:
        w, n, b, g, s = c.key
        out.setdefault((w, b, g, s), {}).setdefault(c.label, {})[n] = c
    return out


def scaling(line: dict) -> dict:
    """nproc -> (efficiency from medians, low, high) against the 1-GPU cell of the same line."""
    one = line.get(1)
    base = one.agg("tokens_per_s_per_gpu") if one else None
    out = {}
    if not base or not base.median:
        return out
    for n, cell in sorted(line.items()):
        a = cell.agg("tokens_per_s_per_gpu")
        if a is not None and n > 1:
            out[n] = (a.median / base.median, a.lo / base.median, a.hi / base.median)
    return out
