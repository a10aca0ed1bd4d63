"""'Where the time goes: top kernels' against hand-made profiles with known per-kernel times: the
rows, category sums, differences and totals as computed by hand; one side unprofiled; profiles from
before top_kernels had per-step figures give no table and no error."""
import pytest

from report_docs import cell_doc, tables, tables_only, write_run

from ddpbench_report.topkernels import category, display_name

SECTION = "Where the time goes: top kernels"
STEPS = 10  # measured steps of every hand-made profile

NVJET = "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT"
FLASH = "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4> >(flash::Flash_fwd_params)"
NCCL = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
FUSED = ("void ddpbench::kernels::(anonymous namespace)::rms_norm_forward_kernel<c10::BFloat16, 8, 2>"
         "(c10::BFloat16 const*, c10::BFloat16 const*, c10::BFloat16*, int, float)")
FFMA = "sm80_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize128x32x8_stage3_warpsize2x2x1_ffma_aligna4_alignc4_execute_kernel__5x_cublas"
CAST = ("void at::native::vectorized_elementwise_kernel<8, at::native::bfloat16_copy_kernel_cuda(at::TensorIteratorBase&)"
        "::{lambda(float)#1}, std::array<char*, 2ul> >(int, at::native::bfloat16_copy_kernel_cuda(at::TensorIteratorBase&)"
        "::{lambda(float)#1}, std::array<char*, 2ul>)")
ADD = ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, std::array<char*, 3ul> >"
       "(int, at::native::CUDAFunctor_add<float>, std::array<char*, 3ul>)")


def short(name):
    """short_kernel_name as harness/profile writes it: no return type, no parameter list."""
    name = name.removeprefix("void ")
    depth = 0
    for i, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0 and not name[:i].endswith("::"):
            return name[:i].replace("(anonymous namespace)::", "")
    return name


def rank(r, kernels, total_ms, launches, distinct):
    """One rank's profile: kernels = [(full name, ms per step, launches per step)]."""
    return {"rank": r, "summary": {"measured_steps": STEPS, "median": {}},
            "kernel_time": {"total_ns": int(total_ms * 1e6 * STEPS), "launches": launches * STEPS, "distinct": distinct},
            "top_kernels": [{"name": n, "short_name": short(n), "count": int(c * STEPS), "count_per_step": c,
                             "total_ns": int(ms * 1e6 * STEPS), "ns_per_step": ms * 1e6, "share": ms / total_ms}
                            for n, ms, c in sorted(kernels, key=lambda k: -k[1])]}


def candidate_profile(flash_rank0):
    """builtin-fused: 27 ms of listed kernels besides flash-attention and 7 ms outside the list (of 4
    of its 10 kernels) on either rank; flash takes flash_rank0 ms on rank 0 and 9 ms on rank 1."""
    ranks = []
    for r, flash in enumerate((flash_rank0, 9.0)):
        ranks.append(rank(r, [(NVJET, 20.0, 100), (FLASH, flash, 16), (NCCL, 4.0, 20), (FUSED, 3.0, 32)],
                          27.0 + flash + 7.0, 300, 10))
    return {"ranks": ranks}


# hf: 43 ms listed, 50 ms of kernel time (7 ms outside its list of 5 of its 8 kernels).
BASELINE_PROFILE = {"ranks": [rank(r, [(NVJET, 22.0, 100), (FFMA, 8.0, 50), (CAST, 5.0, 60), (FLASH, 6.0, 16), (ADD, 2.0, 40)],
                                   50.0, 400, 8) for r in range(2)]}


def docs(candidate_profiled=True, baseline_profile=BASELINE_PROFILE):
    out = []
    for r, flash in enumerate((5.0, 6.0, 7.0), start=1):
        out.append(cell_doc("w", "builtin", 2, 1000, 0.1, impl="fused", repeat=r, cell_id="w/builtin-fused/n2/b4/g1/s64#1",
                            profile=candidate_profile(flash) if candidate_profiled else None))
    out.append(cell_doc("w", "hf", 2, 800, 0.12, repeat=1, cell_id="w/hf/n2/b4/g1/s64#2", profile=baseline_profile))
    return out


def report(tmp_path, documents):
    run = write_run(tmp_path / "run", documents)
    assert tables_only(run, "--no-tensorboard") == 0
    md = (run / "report" / "report.md").read_text()
    return md, (run / "report" / "report.html").read_text()


def section(md):
    """The section's table rows by kernel name (markdown's '\\<' read back as '<')."""
    got = tables(md.replace("\\<", "<"))
    heading = "builtin-fused against hf: w n2 b4 g1 s64"
    return {row["kernel"]: row for row in got[heading]}


def test_two_sides_rows_categories_and_differences(tmp_path):
    md, page = report(tmp_path, docs())
    assert f"## {SECTION}" in md and SECTION in page
    rows = section(md)
    c, b = "builtin-fused", "hf"

    def figures(name):
        row = rows[name]
        return row[f"{c}: ms/step"], row[f"{b}: ms/step"], row["difference ms/step"]

    # Medians over repeats and ranks: flash's samples are 5, 6, 7 (rank 0) and 9, 9, 9 (rank 1): 8;
    # its kernel time 34 + flash: 39, 40, 41, 43, 43, 43: 42.
    assert figures(display_name(short(FLASH))) == ("8.00", "6.00", "+2.00")
    assert rows[display_name(short(FLASH))][f"{c}: share"] == f"{8 / 42 * 100:.1f}%"
    assert rows[display_name(short(FLASH))][f"{c}: launches/step"] == "16"
    assert figures(NVJET) == ("20.00", "22.00", "-2.00")
    assert rows[NVJET][f"{b}: share"] == "44.0%" and rows[NVJET][f"{b}: launches/step"] == "100"
    # A kernel missing from a side's list took at most that side's smallest listed time (candidate
    # 3 ms, hf 2 ms): a bound, and the difference a range.
    assert figures(FFMA[:107] + "...") == ("< 3.00", "8.00", "-8.00 to -5.00")
    assert rows[FFMA[:107] + "..."][f"{c}: launches/step"] == "-"
    assert figures(display_name(short(NCCL))) == ("4.00", "< 2.00", "+2.00 to +4.00")
    assert figures("vectorized_elementwise_kernel<4, CUDAFunctor_add<float>, array<char*, 3ul> >") == (
        "< 3.00", "2.00", "-2.00 to +1.00")
    assert figures("vectorized_elementwise_kernel<8, bfloat16_copy_kernel_cuda(TensorIteratorBase&), array<char*, 2ul> >") == (
        "< 3.00", "5.00", "-5.00 to -2.00")
    assert figures("ddpbench::kernels::rms_norm_forward_kernel<BFloat16, 8, 2>") == ("3.00", "< 2.00", "+1.00 to +3.00")

    # Category rows: the sum of each side's listed kernels of the category, by the larger side's time.
    cats = [r["kernel"] for r in tables(md.replace("\\<", "<"))["builtin-fused against hf: w n2 b4 g1 s64"]
            if r["kernel"].endswith("(all listed)")]
    assert cats == [f"{x} (all listed)" for x in ("GEMM", "GEMM fp32 on CUDA cores", "attention", "copy / cast",
                                                  "NCCL", "fused (ddpbench::kernels)", "elementwise")]
    assert figures("GEMM fp32 on CUDA cores (all listed)") == ("0.00", "8.00", "-8.00")
    assert rows["GEMM fp32 on CUDA cores (all listed)"][f"{b}: share"] == "16.0%"
    assert figures("copy / cast (all listed)") == ("0.00", "5.00", "-5.00")
    assert figures("fused (ddpbench::kernels) (all listed)") == ("3.00", "0.00", "+3.00")
    assert figures("attention (all listed)") == ("8.00", "6.00", "+2.00")
    assert rows["GEMM (all listed)"][f"{b}: launches/step"] == "100"

    # Totals: kernel time and launches per step; outside the lists: 7 ms on both sides (candidate's
    # launches 300 - 168 listed, hf's 400 - 266).
    assert figures("all kernels") == ("42.00", "50.00", "-8.00")
    assert (rows["all kernels"][f"{c}: launches/step"], rows["all kernels"][f"{b}: launches/step"]) == ("300", "400")
    assert figures("kernels outside the top lists") == ("7.00", "7.00", "+0.00")
    assert rows["kernels outside the top lists"][f"{c}: share"] == f"{7 / 42 * 100:.1f}%"
    assert rows["kernels outside the top lists"][f"{b}: share"] == "14.0%"
    assert (rows["kernels outside the top lists"][f"{c}: launches/step"],
            rows["kernels outside the top lists"][f"{b}: launches/step"]) == ("132", "134")
    # In the HTML the names' template arguments are text, not tags.
    assert "CUDAFunctor_add&lt;float&gt;" in page


def test_one_side_profiled_gives_that_sides_table(tmp_path):
    md, _ = report(tmp_path, docs(baseline_profile=None))
    assert "hf has no profile with per-step top kernels in this cell: builtin-fused's alone." in md
    rows = section(md)
    first = next(iter(rows.values()))
    assert list(first) == ["kernel", "category", "builtin-fused: ms/step", "builtin-fused: share",
                           "builtin-fused: launches/step"]
    assert rows[NVJET]["builtin-fused: ms/step"] == "20.00"
    assert rows["all kernels"]["builtin-fused: ms/step"] == "42.00"
    assert FFMA[:107] + "..." not in rows  # only the profiled side's kernels


def test_no_profile_or_older_profile_gives_no_table(tmp_path):
    md, _ = report(tmp_path / "none", docs(candidate_profiled=False, baseline_profile=None))
    assert SECTION not in md
    # Profiles from before per-step top kernels: no top_kernels at all, or entries without ns_per_step.
    older = {"ranks": [{"rank": 0, "summary": {"measured_steps": STEPS, "median": {}},
                        "top_kernels": [{"name": NVJET, "count": 10, "total_ns": 10**8, "share": 0.5}]}]}
    none = {"ranks": [{"rank": 0, "summary": {"measured_steps": STEPS, "median": {}}}]}
    documents = docs(candidate_profiled=False, baseline_profile=older)
    documents[0]["profile"] = none
    md, _ = report(tmp_path / "older", documents)
    assert SECTION not in md and "builtin-fused against hf" in md


def test_a_profiled_cell_in_no_pair_has_its_own_table(tmp_path):
    md, _ = report(tmp_path, docs()[:3])  # the candidate alone: no comparison
    got = tables(md.replace("\\<", "<"))
    rows = {r["kernel"]: r for r in got["builtin-fused: w n2 b4 g1 s64"]}
    assert rows[display_name(short(FLASH))]["builtin-fused: ms/step"] == "8.00"


@pytest.mark.parametrize("name, expected", [
    (NVJET, "GEMM"), (FFMA, "GEMM fp32 on CUDA cores"), ("volta_sgemm_128x64_nn", "GEMM fp32 on CUDA cores"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>(Params)", "GEMM"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>::Params)", "attention"),
    (FLASH, "attention"), (NCCL, "NCCL"), (FUSED, "fused (ddpbench::kernels)"), (CAST, "copy / cast"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)>", "copy / cast"),
    (ADD, "elementwise"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<float> > >", "reduction"),
    ("void at::native::multi_tensor_apply_kernel<at::native::FusedAdamMathFunctor<float, 4> >", "optimizer"),
    ("void at::native::cunn_SoftMaxForward<4, float, float, float, at::native::LogSoftMaxForwardEpilogue>", "other"),
])
def test_category_by_name(name, expected):
    assert category(name) == expected


def test_missing_kernel_is_zero_in_a_complete_list_and_a_range_across_mixed_samples():
    from ddpbench_report.topkernels import Sample, Side
    complete = Sample({"a": (5e6, 1, "a")}, 5e6, 1, True, 5e6)        # every kernel listed: b took nothing
    partial = Sample({"a": (4e6, 1, "a"), "b": (3e6, 2, "b")}, 9e6, 3, False, 3e6)
    lone = Sample({"a": (6e6, 1, "a")}, 8e6, 1, False, 6e6)          # b took at most 6 ms
    assert Side("x", [complete]).time("b").exact and Side("x", [complete]).time("b").hi == 0
    # b's samples: exactly 0, exactly 3 ms, 0 to 6 ms: the median lies in [0, 3] ms.
    r = Side("x", [complete, partial, lone]).time("b")
    assert (r.lo, r.hi) == (0, 3e6)
    assert Side("x", [complete, partial, lone]).launches("b") is None
    assert Side("x", [complete, partial, lone]).launches("a") == 1
