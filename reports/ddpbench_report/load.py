"""Result documents -> one record per cell run (Doc) and one tidy row per record.

Accepted inputs: a run folder (`runs/<id>/` with run.json and cells/), a folder of documents
(searched recursively, as bench/results/ holds those of `ddpbench train --out`), or one document.
Documents from before cell_id/repeat existed get an identity from their configuration (and from the
`<workload>-<trainer>-n<N>[-r<R>].json` names that scripts/gpu-check gives them).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field


class InputError(Exception):
    """Unusable input: report.py prints it as one line and exits 2."""


# scripts/gpu-check's file names; "aa" is its A/A cell (the built-in trainer, same global batch as
# two accumulated half micro-batches: the same computation up to rounding). A suite's A/A twins (of
# any trainer) are the cells of workload "<workload>-aa".
LEGACY_NAME = re.compile(r"(.+)-(builtin|hf|liger|unsloth|hf-loop|aa)-n(\d+)(?:-r(\d+))?\.json$")
# Files in a run's tree that are not cell documents and can be large.
SKIPPED_SUFFIXES = (".trace.json", ".activity.json")


@dataclass
class Doc:
    path: str
    run: str            # the folder (or file) given on the command line that it came from
    cell_id: str
    repeat: int
    workload: str
    trainer: str        # config.trainer
    impl: str           # config.impl
    nproc: int
    micro_batch: int
    grad_accum: int
    seq_len: int
    aa: bool            # an A/A twin: it only sets its trainer's floor of loss-curve distances
    state: str          # ok | failed | skipped
    reason: str
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def trainer_label(self) -> str:
        """The trainer as reports name it: the built-in trainer's impl is part of its name."""
        return "builtin-fused" if self.trainer == "builtin" and self.impl == "fused" else self.trainer

    @property
    def label(self) -> str:
        return self.trainer_label + (" A/A" if self.aa else "")

    @property
    def key(self) -> tuple:
        """What cells of different trainers share when they do equal work."""
        return (self.workload, self.nproc, self.micro_batch, self.grad_accum, self.seq_len)

    @property
    def base_id(self) -> str:
        """cell_id without its configuration hash."""
        return self.cell_id.split("#", 1)[0]

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def summary(self) -> dict:
        return self.raw.get("summary") or {}

    @property
    def steps(self) -> list:
        return self.raw.get("steps") or []

    @property
    def ranks(self) -> list:
        return self.raw.get("ranks") or []

    @property
    def profile(self) -> dict | None:
        return self.raw.get("profile")

    @property
    def fingerprint(self) -> dict:
        return self.raw.get("fingerprint") or {}


def key_name(key: tuple) -> str:
    workload, n, b, g, s = key
    return f"{workload} n{n} b{b} g{g} s{s}"


# Cell documents of other commands that share the cell format but are not training runs: the kernel
# table reads a kernels run's kernels.json; collectives runs have no section in the report.
NOT_TRAINING_KINDS = ("kernels", "collectives")


def is_cell_document(j) -> bool:
    """A training cell's result document (not a kernels or collectives cell of the same format)."""
    return (isinstance(j, dict) and "config" in j and "status" in j and ("summary" in j or "steps" in j)
            and j.get("kind") not in NOT_TRAINING_KINDS)


def is_kernel_document(j) -> bool:
    """Google Benchmark's JSON output (the kernel benchmarks of bench/)."""
    return isinstance(j, dict) and isinstance(j.get("benchmarks"), list)


def read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON document ({e})") from None


def _int(config: dict, name: str, default: int = 0) -> int:
    try:
        return int(config.get(name, default))
    except (TypeError, ValueError):
        return default


def _id_parts(cell_id: str) -> list:
    """workload, trainer, nN, bB, gG, sS of a cell_id or cell name: the last five parts are fixed,
    the workload before them may hold '/' itself."""
    return cell_id.split("#", 1)[0].rsplit("/", 5)


def make_doc(j: dict, path: str, run: str) -> Doc:
    config = j.get("config") or {}
    status = j.get("status") or {}
    state = status.get("state", "ok") if isinstance(status, dict) else str(status)
    reason = status.get("reason", "") if isinstance(status, dict) else ""
    trainer = config.get("trainer", "builtin")
    impl = config.get("impl", "baseline")
    n, b, g, s = _int(config, "nproc", 1), _int(config, "micro_batch"), _int(config, "grad_accum", 1), _int(config, "seq_len")
    legacy = LEGACY_NAME.match(os.path.basename(path))
    cell = j.get("cell", "")
    cell_id = j.get("cell_id") or ""
    if cell_id:
        workload = _id_parts(cell_id)[0]
    elif cell and cell != "train":
        workload = cell.split("/", 1)[0]
    elif legacy:
        workload = legacy.group(1)
    else:
        workload = f"{config.get('mode', 'run')}-{config.get('preset', '')}".rstrip("-")
    aa = bool(legacy and legacy.group(2) == "aa") or workload.endswith("-aa")
    if aa and workload.endswith("-aa"):
        workload = workload[: -len("-aa")]
    if not cell_id:
        cell_id = f"{workload}{'-aa' if aa else ''}/{trainer}/n{n}/b{b}/g{g}/s{s}"
        if impl != "baseline":
            cell_id += f"/{impl}"
    repeat = j.get("repeat")
    if repeat is None:
        repeat = int(legacy.group(4)) if legacy and legacy.group(4) else 0  # 0: numbered later
    return Doc(path=path, run=run, cell_id=cell_id, repeat=int(repeat), workload=workload, trainer=trainer, impl=impl,
               nproc=n, micro_batch=b, grad_accum=g, seq_len=s, aa=aa, state=state, reason=reason, raw=j)


def _json_files(folder: str, skip_dirs=()):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) not in skip_dirs and d != "tensorboard")
        for name in sorted(filenames):
            if name.endswith(".json") and not name.endswith(SKIPPED_SUFFIXES):
                yield os.path.join(dirpath, name)


def _skipped_from_index(entry: dict, run_dir: str) -> Doc:
    """A cell that run.json lists with no document (older runs wrote none for skipped cells)."""
    status = str(entry.get("status", "skipped"))
    state, _, reason = status.partition(":")
    name = entry.get("name", "?")
    parts = _id_parts(name)
    nums = {p[0]: int(p[1:]) for p in parts[2:] if len(p) > 1 and p[0] in "nbgs" and p[1:].isdigit()}
    return Doc(path=os.path.join(run_dir, "run.json"), run=run_dir, cell_id=entry.get("cell_id") or name,
               repeat=int(entry.get("repeat", 0)), workload=parts[0],
               trainer=parts[1] if len(parts) > 1 else "?", impl="baseline", nproc=nums.get("n", 0),
               micro_batch=nums.get("b", 0), grad_accum=nums.get("g", 0), seq_len=nums.get("s", 0), aa=False,
               state=state.strip() or "skipped", reason=reason.strip())


def load_path(path: str):
    """Cell documents and kernel documents under one path given on the command line."""
    docs, kernels = [], []
    if os.path.isfile(path):
        j = read_json(path)
        if is_cell_document(j):
            docs.append(make_doc(j, path, path))
        elif is_kernel_document(j):
            kernels.append((path, j))
        else:
            raise InputError(f"{path}: neither a ddpbench result document nor a kernel benchmark document")
        return docs, kernels
    if not os.path.isdir(path):
        raise InputError(f"{path}: no such file or folder")
    index_path = os.path.join(path, "run.json")
    skip = set()
    if os.path.isfile(index_path):
        # A run folder: its index names the cell documents; work/ holds per-rank files, not cells.
        index = read_json(index_path)
        skip = {os.path.join(path, "work"), os.path.join(path, "cells")}
        for entry in index.get("cells", []) if isinstance(index, dict) else []:
            file = entry.get("file") or ""
            if file:
                doc_path = os.path.join(path, file)
                if not os.path.isfile(doc_path):
                    raise InputError(f"{index_path}: cell {entry.get('name')} names {file}, which does not exist")
                j = read_json(doc_path)
                if isinstance(j, dict) and j.get("kind") in NOT_TRAINING_KINDS:
                    continue  # `ddpbench bench kernels` cells: the kernel table reads the run's kernels.json
                if not is_cell_document(j):
                    raise InputError(f"{doc_path}: not a ddpbench result document")
                docs.append(make_doc(j, doc_path, path))
            else:
                docs.append(_skipped_from_index(entry, path))
    else:
        # A folder holding run folders (a results folder of record): each is read as a run, through its
        # index, so that a cell's document is not read a second time from the run's work/ files.
        for dirpath, dirnames, _ in os.walk(path):
            dirnames.sort()
            for d in list(dirnames):
                sub = os.path.join(dirpath, d)
                if os.path.isfile(os.path.join(sub, "run.json")):
                    sub_docs, sub_kernels = load_path(sub)
                    docs += sub_docs
                    kernels += sub_kernels
                    skip.add(sub)
                    dirnames.remove(d)
    for file in _json_files(path, skip):
        if file == index_path:
            continue
        try:
            j = read_json(file)
        except InputError:
            continue  # a stray unreadable file in a results folder is not a cell
        if os.path.isfile(index_path):
            if is_kernel_document(j):
                kernels.append((file, j))
        elif is_cell_document(j):
            docs.append(make_doc(j, file, path))
        elif is_kernel_document(j):
            kernels.append((file, j))
    return docs, kernels


def number_repeats(docs: list[Doc]) -> None:
    """Documents sharing a cell_id are repeats; ones with no number, or a number already taken (the
    same cell in several run folders), get the next free one in the order given."""
    taken: dict[str, set] = {}
    for d in docs:
        if d.repeat > 0 and d.repeat not in taken.setdefault(d.cell_id, set()):
            taken[d.cell_id].add(d.repeat)
        else:
            d.repeat = 0
    for d in docs:
        if d.repeat == 0:
            used = taken.setdefault(d.cell_id, set())
            d.repeat = next(r for r in range(1, len(used) + 2) if r not in used)
            used.add(d.repeat)


def load_runs(paths: list[str]):
    """All documents under the paths, repeats numbered across them."""
    if not paths:
        raise InputError("no RUN folder or document given")
    docs, kernels = [], []
    for p in paths:
        d, k = load_path(p)
        docs += d
        kernels += k
    if not docs and not kernels:
        raise InputError(f"{', '.join(paths)}: no ddpbench result document found")
    number_repeats(docs)
    return docs, kernels


def tidy_row(d: Doc) -> dict:
    """One flat row per cell run: the figures the tables and plots use, in their units."""
    s = d.summary
    mfu = s.get("mfu")
    row = {
        "run": d.run, "cell_id": d.cell_id, "repeat": d.repeat, "workload": d.workload, "trainer": d.label,
        "nproc": d.nproc, "micro_batch": d.micro_batch, "grad_accum": d.grad_accum, "seq_len": d.seq_len,
        "state": d.state, "reason": d.reason,
        "tokens_per_s": s.get("tokens_per_s"), "tokens_per_s_per_gpu": s.get("tokens_per_s_per_gpu"),
        "step_time_p50_s": s.get("step_time_p50_s"), "step_time_p95_s": s.get("step_time_p95_s"),
        "peak_allocated_bytes": s.get("peak_allocated_bytes", s.get("peak_allocated_max")),
        "peak_reserved_bytes": s.get("peak_reserved_bytes", s.get("peak_reserved_max")),
        "mfu": mfu if isinstance(mfu, (int, float)) and mfu >= 0 else None,
        "final_loss": s.get("final_loss"),
    }
    prof = profile_fractions(d)
    row["exposed_comm_fraction"] = prof.get("exposed_comm") if prof else None
    return row


def profile_medians(d: Doc) -> dict | None:
    """Median per-step milliseconds of compute, exposed communication, other and idle, averaged over
    the ranks that the profile analysed (harness/profile/analysis.h: they add up to the step)."""
    p = d.profile
    if not p or not p.get("ranks"):
        return None
    parts = {"compute": "compute_ns", "exposed communication": "exposed_comm_ns", "other": "other_ns", "idle": "idle_ns"}
    out = {}
    for name, field_name in parts.items():
        vals = [r["summary"]["median"].get(field_name) for r in p["ranks"] if r.get("summary", {}).get("median")]
        vals = [v for v in vals if isinstance(v, (int, float))]
        if not vals:
            return None
        out[name] = sum(vals) / len(vals) / 1e6
    return out


def profile_fractions(d: Doc) -> dict | None:
    p = d.profile
    if not p or not p.get("ranks"):
        return None
    fr = [r.get("summary", {}).get("fractions") or {} for r in p["ranks"]]
    vals = [f.get("exposed_comm") for f in fr if isinstance(f.get("exposed_comm"), (int, float))]
    return {"exposed_comm": sum(vals) / len(vals)} if vals else None
