// The fused ops of the registry (kernels/ops.h), every one by the same code:
// - KernelRegistry.* (CPU, run everywhere): the registry's own consistency, its cost models at every
//   preset, and each reference run on the CPU in fp32 at the tiny shape.
// - KernelsGpu.* (ctest label gpu): each op on fresh random inputs at preset and awkward shapes, with
//   outputs poisoned (NaN) before the call, against its ATen reference in fp32 (bf16 inputs) or fp64
//   (fp32 inputs), gradients included; skipped with the reason where no GPU is visible or the
//   binary has no kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <set>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>

#include "kernels/bench_results.h"
#include "kernels/check.h"
#include "common/error.h"
#include "kernels/ops.h"

namespace ddpbench::kernels {
namespace {

const std::vector<std::string> kPresets{"tiny", "350m", "1b", "8b"};

TEST(KernelRegistry, NamesUniqueAndEveryOpComplete) {
  ASSERT_FALSE(registry().empty());
  std::set<std::string> names;
  for (const auto& op : registry()) {
    EXPECT_FALSE(op.name.empty());
    EXPECT_TRUE(names.insert(op.name).second) << "duplicate op name " << op.name;
    EXPECT_TRUE(op.make_inputs) << op.name;
    EXPECT_TRUE(op.reference) << op.name;
    EXPECT_TRUE(op.fused) << op.name;
    EXPECT_TRUE(op.forward_bytes && op.backward_bytes && op.forward_flops && op.backward_flops) << op.name;
    EXPECT_EQ(&find_op(op.name), &op);
  }
  EXPECT_THROW(find_op("no_such_op"), UsageError);
}

TEST(KernelRegistry, CostModelsPositiveAtEveryPreset) {
  for (const auto& op : registry()) {
    for (const auto& preset : kPresets) {
      const auto shape = preset_op_shape(preset);
      for (const auto dtype : {at::kBFloat16, at::kFloat}) {
        EXPECT_GT(op.forward_bytes(shape, dtype), 0) << op.name << " " << preset;
        EXPECT_GT(op.backward_bytes(shape, dtype), 0) << op.name << " " << preset;
      }
      EXPECT_GT(op.forward_flops(shape), 0) << op.name << " " << preset;
      EXPECT_GT(op.backward_flops(shape), 0) << op.name << " " << preset;
      // fp32 moves twice the bytes of bf16 for these element-wise and row-wise ops.
      EXPECT_GT(op.forward_bytes(shape, at::kFloat), op.forward_bytes(shape, at::kBFloat16)) << op.name;
    }
  }
}

TEST(KernelRegistry, ReferencesRunOnTheCpuAtTheTinyShape) {
  const auto shape = preset_op_shape("tiny", 64, 32);
  for (const auto& op : registry()) {
    auto gen = make_generator(at::Device(at::kCPU), 1234);
    const auto in = op.make_inputs(shape, at::kFloat, at::Device(at::kCPU), gen);
    ASSERT_EQ(in.inputs.size(), in.differentiable.size()) << op.name;
    std::vector<at::Tensor> inputs, wrt;
    for (std::size_t i = 0; i < in.inputs.size(); ++i) {
      auto t = in.inputs[i].detach();
      if (in.differentiable[i]) wrt.push_back(t.requires_grad_(true));
      inputs.push_back(t);
    }
    const auto outputs = op.reference(inputs);
    ASSERT_EQ(outputs.size(), in.grad_outputs.size()) << op.name;
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      EXPECT_EQ(outputs[i].sizes(), in.grad_outputs[i].sizes()) << op.name << " output " << i;
      EXPECT_TRUE(at::isfinite(outputs[i]).all().item<bool>()) << op.name << " output " << i;
    }
    const auto grads = torch::autograd::grad(outputs, wrt, in.grad_outputs, false, false, true);
    for (std::size_t i = 0; i < grads.size(); ++i) {
      ASSERT_TRUE(grads[i].defined()) << op.name << ": no gradient for differentiable input " << i;
      EXPECT_EQ(grads[i].sizes(), wrt[i].sizes()) << op.name;
      EXPECT_GT(grads[i].abs().sum().item<double>(), 0) << op.name << ": zero gradient for input " << i;
    }
  }
}

TEST(KernelRegistry, CheckCatchesAWrongOp) {
  // The check itself on the CPU: an op whose "fused" side is off by 1% must fail at fp32's tolerance
  // and pass at bf16's, and a NaN must fail at any tolerance.
  OpSpec op;
  op.name = "scaled";
  op.reference = [](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{in[0] * 2}; };
  op.fused = [](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{in[0] * 2.02}; };
  OpInputs in;
  in.inputs = {at::randn({64, 7})};
  in.differentiable = {true};
  in.grad_outputs = {at::randn({64, 7})};
  const auto r = check_against_reference(op, in);
  EXPECT_FALSE(r.ok()) << r.describe();
  EXPECT_NEAR(r.worst, 0.01, 1e-6);
  ASSERT_EQ(r.tensors.size(), 2u);
  op.fused = [](const std::vector<at::Tensor>& in) {
    auto spoiled = at::zeros(in[0].sizes(), in[0].options());
    spoiled.select(0, 3).fill_(std::nan(""));
    return std::vector<at::Tensor>{in[0] * 2 + spoiled};
  };
  EXPECT_FALSE(check_against_reference(op, in).ok());
}

TEST(KernelBenchResults, SeriesAndDocumentsFromGoogleBenchmarkJson) {
  // Two repetitions of baseline and fused, one of liger, two copy sizes, and aggregates to ignore.
  auto entry = [](const std::string& name, double us, double bps, double peak, double check = -1) {
    nlohmann::json e = {{"name", name + "/iterations:10/manual_time"}, {"run_name", name + "/iterations:10/manual_time"},
                        {"run_type", "iteration"}, {"real_time", us}, {"time_unit", "us"}, {"bytes_per_second", bps},
                        {"peak_extra_bytes", peak}, {"model_bytes", bps * us * 1e-6}};
    if (check >= 0) e["check_rel_error"] = check;
    return e;
  };
  nlohmann::json g = {{"benchmarks", nlohmann::json::array()}};
  auto& b = g["benchmarks"];
  b.push_back(entry("copy/67108864", 40, 3.0e12, 0));
  b.push_back(entry("copy/268435456", 140, 4.0e12, 0));
  b.push_back(entry("copy/268435456", 150, 3.8e12, 0));
  b.push_back(entry("rms_norm/1b/fwd/baseline", 120, 1.0e12, 100));
  b.push_back(entry("rms_norm/1b/fwd/baseline", 140, 0.9e12, 120));
  b.push_back(entry("rms_norm/1b/fwd/fused", 30, 3.4e12, 10, 2e-3));
  b.push_back(entry("rms_norm/1b/fwd/fused", 32, 3.2e12, 10, 3e-3));
  b.push_back(entry("rms_norm/1b/fwd/liger", 60, 1.7e12, 20));
  b.push_back({{"name", "rms_norm/1b/fwd/fused_median"}, {"run_name", "rms_norm/1b/fwd/fused"}, {"run_type", "aggregate"},
               {"aggregate_name", "median"}, {"real_time", 1.0}, {"time_unit", "us"}});
  b.push_back(entry("swiglu/8b/bwd/fused", 500, 3.5e12, 5, 0.5));  // a failed check

  const auto copies = copy_rates(g);
  ASSERT_EQ(copies.size(), 2u);
  EXPECT_DOUBLE_EQ(copies.at(2.0 * 268435456), 3.9e12);  // the median of the size's repetitions
  EXPECT_DOUBLE_EQ(best_copy_rate(copies), 3.9e12);
  EXPECT_DOUBLE_EQ(copy_rate_near(copies, 1.5e8), 3.0e12);  // 134 MB of traffic is nearer 150 MB than 537 MB
  EXPECT_DOUBLE_EQ(copy_rate_near(copies, 4e8), 3.9e12);
  const auto series = kernel_series(g);
  ASSERT_EQ(series.size(), 2u);
  const auto& rms = series[0];
  EXPECT_EQ(rms.op, "rms_norm");
  EXPECT_EQ(rms.preset, "1b");
  EXPECT_EQ(rms.pass, "fwd");
  ASSERT_EQ(rms.rows.size(), 3u);
  EXPECT_EQ(rms.rows[0].impl, "baseline");
  EXPECT_EQ(rms.rows[1].impl, "fused");
  EXPECT_EQ(rms.rows[2].impl, "liger");
  EXPECT_EQ(rms.rows[0].repetitions, 2);
  EXPECT_NEAR(rms.rows[0].time_s, 130e-6, 1e-12);
  EXPECT_NEAR(rms.rows[1].time_min_s, 30e-6, 1e-12);
  EXPECT_DOUBLE_EQ(rms.rows[0].peak_extra_bytes, 120);
  EXPECT_DOUBLE_EQ(rms.rows[1].check_rel_error, 3e-3);

  KernelRunInfo info;
  info.run_id = "r1";
  info.tokens = 8192;
  // The rms_norm rows move about 1e8 bytes: compared with the 64 MiB copy (134 MB of traffic).
  const auto doc = kernel_document(rms, copies, info);
  EXPECT_EQ(doc["kind"], "kernels");
  EXPECT_EQ(doc["cell"], "kernels/rms_norm/1b/fwd");
  EXPECT_EQ(doc["status"]["state"], "ok");
  EXPECT_NEAR(doc["summary"]["speedup_vs_baseline"].get<double>(), 130.0 / 31.0, 1e-9);
  EXPECT_NEAR(doc["summary"]["speedup_vs_liger"].get<double>(), 60.0 / 31.0, 1e-9);
  EXPECT_NEAR(doc["summary"]["fused_pct_copy"].get<double>(), 100.0 * 3.3e12 / 3.0e12, 1e-9);
  EXPECT_DOUBLE_EQ(doc["summary"]["copy_best_GBps"].get<double>(), 3900);
  EXPECT_EQ(doc["rows"].size(), 3u);
  EXPECT_EQ(kernel_file_name(rms), "rms_norm-1b-fwd.json");

  const auto bad = kernel_document(series[1], {}, info);
  EXPECT_EQ(bad["status"]["state"], "failed");
  EXPECT_FALSE(bad["summary"].contains("fused_pct_copy"));  // no copy measured
}

TEST(KernelBenchResults, L2SettingComesFromEveryEntryAndMustAgree) {
  auto entry = [](const std::string& name, const char* run_type, int l2_flush) {
    nlohmann::json e = {{"name", name}, {"run_name", name}, {"run_type", run_type}, {"real_time", 10.0}, {"time_unit", "us"},
                        {"bytes_per_second", 1e12}, {"model_bytes", 1e7}};
    if (l2_flush >= 0) e["l2_flush"] = l2_flush;
    return e;
  };
  auto output = [](std::vector<nlohmann::json> entries) { return nlohmann::json{{"benchmarks", entries}}; };
  // bench_kernels and liger_ops.py, both flushed; an aggregate's counter does not count.
  const auto cold = output({entry("copy/67108864", "iteration", 1), entry("swiglu/1b/fwd/fused", "iteration", 1),
                            entry("swiglu/1b/fwd/liger", "iteration", 1), entry("swiglu/1b/fwd/fused_median", "aggregate", 0)});
  EXPECT_TRUE(timed_l2_cold(cold));
  EXPECT_FALSE(timed_l2_cold(output({entry("copy/67108864", "iteration", 0), entry("swiglu/1b/fwd/fused", "iteration", 0)})));
  // Output from before the flag has no counter: it was timed warm.
  EXPECT_FALSE(timed_l2_cold(output({entry("copy/67108864", "iteration", -1), entry("swiglu/1b/fwd/fused", "iteration", -1)})));
  // A warm Liger file merged with a cold run (or an old file with a new one): refused, naming both.
  try {
    timed_l2_cold(output({entry("copy/67108864", "iteration", 1), entry("swiglu/1b/fwd/liger", "iteration", -1)}));
    ADD_FAILURE() << "mixed settings accepted";
  } catch (const RunError& e) {
    EXPECT_NE(std::string(e.what()).find("copy/67108864 L2-cold"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("swiglu/1b/fwd/liger L2-warm"), std::string::npos) << e.what();
  }
  // The documents say how their rows were timed, and it is part of the cell's identity.
  const auto series = kernel_series(cold);
  ASSERT_EQ(series.size(), 1u);
  KernelRunInfo info;
  info.l2_flush = true;
  const auto cold_doc = kernel_document(series[0], copy_rates(cold), info);
  EXPECT_EQ(cold_doc["config"]["l2_flush"], true);
  info.l2_flush = false;
  const auto warm_doc = kernel_document(series[0], copy_rates(cold), info);
  EXPECT_EQ(warm_doc["config"]["l2_flush"], false);
  EXPECT_NE(cold_doc["cell_id"], warm_doc["cell_id"]);
}

// --- GPU ------------------------------------------------------------------------------------------

// Shapes that are not multiples of any block or pack, one row, strided rows, and the presets at a
// few thousand tokens.
std::vector<OpShape> gpu_shapes() {
  std::vector<OpShape> shapes;
  auto add = [&](std::string name, std::int64_t tokens, std::int64_t hidden, std::int64_t inter, std::int64_t heads,
                 std::int64_t kv, std::int64_t head_dim, std::int64_t seq) {
    OpShape s;
    s.preset = std::move(name);
    s.tokens = tokens;
    s.hidden = hidden;
    s.intermediate = inter;
    s.heads = heads;
    s.kv_heads = kv;
    s.head_dim = head_dim;
    s.seq_len = seq;
    shapes.push_back(s);
  };
  add("one-row-odd", 1, 77, 333, 3, 1, 6, 1);
  add("odd", 1000, 1000, 2731, 5, 1, 14, 500);          // hidden a multiple of 8, the rest not
  add("scalar-hidden", 37, 4099, 1001, 4, 2, 40, 37);   // hidden not a multiple of 8, many packs
  add("wide", 3, 12288, 8, 2, 2, 256, 3);               // several packs per thread
  add("350m-1k", 1024, 1024, 2816, 16, 16, 64, 512);
  // Rows of 2-3 warps with a last pack past the row's end, a rows count the blocks do not divide,
  // and 17 heads that RoPE's threads share unevenly (6, 6, 5), q and k heads in one thread.
  add("uneven-heads", 63, 2056, 24, 13, 4, 16, 21);
  for (const auto& preset : {"1b", "8b"}) shapes.push_back(preset_op_shape(preset, 2048, 1024));
  return shapes;
}

class KernelsGpu : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!fused_kernels_built()) GTEST_SKIP() << "skipped: this binary was built without the fused kernels (no nvcc)";
    if (!torch::cuda::is_available()) GTEST_SKIP() << "skipped: no CUDA GPU visible";
    // Every output and workspace the bindings allocate starts as NaN (kernels/common/binding.h).
    setenv("DDPBENCH_KERNELS_POISON", "1", 1);
  }
  void TearDown() override { unsetenv("DDPBENCH_KERNELS_POISON"); }
};

void expect_matches(const OpSpec& op, const OpInputs& in, const std::string& where) {
  const auto r = check_against_reference(op, in);
  EXPECT_TRUE(r.ok()) << op.name << " at " << where << ": " << r.describe();
}

TEST_P(KernelsGpu, MatchesTheReferenceWithGradients) {
  const auto& op = find_op(GetParam());
  const at::Device cuda(at::kCUDA, 0);
  std::uint64_t seed = 1;
  for (const auto& shape : gpu_shapes()) {
    for (const auto dtype : {at::kBFloat16, at::kFloat}) {
      auto gen = make_generator(cuda, seed++);
      const auto in = op.make_inputs(shape, dtype, cuda, gen);
      expect_matches(op, in, shape.preset + "/" + std::string(c10::toString(dtype)));
    }
  }
}

TEST_P(KernelsGpu, NonContiguousInputs) {
  // Inputs laid out transposed (column-major) or as a slice of a wider buffer: the binding makes
  // them contiguous; the results must not change.
  const auto& op = find_op(GetParam());
  const at::Device cuda(at::kCUDA, 0);
  auto gen = make_generator(cuda, 99);
  auto in = op.make_inputs(preset_op_shape("tiny", 96, 48), at::kBFloat16, cuda, gen);
  for (auto& t : in.inputs) {
    if (t.dim() < 2 || !t.is_floating_point()) continue;
    auto wide = at::empty({t.size(0), t.size(1) + 3}, t.options()).narrow(1, 0, t.size(1));
    if (t.dim() > 2) {
      auto sizes = t.sizes().vec();
      sizes[1] += 3;
      wide = at::empty(sizes, t.options()).narrow(1, 0, t.size(1));
    }
    wide.copy_(t);
    ASSERT_FALSE(wide.is_contiguous());
    t = wide;
  }
  expect_matches(op, in, "tiny, non-contiguous");
}

TEST_P(KernelsGpu, FreshInputsEachCall) {
  // Two calls on different random inputs give different outputs (nothing cached between calls).
  const auto& op = find_op(GetParam());
  const at::Device cuda(at::kCUDA, 0);
  const auto shape = preset_op_shape("tiny", 128, 64);
  auto g1 = make_generator(cuda, 5), g2 = make_generator(cuda, 6);
  const auto a = op.make_inputs(shape, at::kFloat, cuda, g1), b = op.make_inputs(shape, at::kFloat, cuda, g2);
  expect_matches(op, a, "tiny seed 5");
  expect_matches(op, b, "tiny seed 6");
  const auto out_a = op.fused(a.inputs)[0], out_b = op.fused(b.inputs)[0];
  EXPECT_FALSE(at::allclose(out_a, out_b));
}

std::vector<std::string> op_names() {
  std::vector<std::string> names;
  for (const auto& op : registry()) names.push_back(op.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(Registry, KernelsGpu, ::testing::ValuesIn(op_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace ddpbench::kernels
