// The gradient reducer on real Gloo process groups (2 ranks as threads): several buckets, a
// parameter that gets no gradient and accumulation micro-steps must give every rank the average
// over ranks of its summed micro-step gradients, the single-process reference up to rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <mutex>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>

#include "ddp/ddp.h"
#include "device/device.h"
#include "launch/launch.h"

namespace ddpbench::ddp {
namespace {

constexpr int kWorld = 2;
constexpr int kAccum = 3;
constexpr int kSteps = 2;
constexpr std::size_t kUnused = 2;  // the parameter no loss touches

// Registration order; with a 1 KiB cap the reducer (reverse order) forms {p5, p4} {p3} {p2, p1} {p0}:
// the unused parameter shares a bucket with a used one, and the bucket after it must wait for it.
const std::vector<std::vector<std::int64_t>> kShapes = {{8, 16}, {256}, {100}, {16, 32}, {64}, {12, 20}};

// A generator of its own per call: the ranks are threads, and the global one would be shared.
at::Tensor randn_seeded(const std::vector<std::int64_t>& shape, std::uint64_t seed) {
  return at::randn(shape, at::make_generator<at::CPUGeneratorImpl>(seed), at::TensorOptions().dtype(at::kFloat));
}

std::vector<at::Tensor> make_params(const at::Device& device = at::kCPU) {
  std::vector<at::Tensor> params;
  for (std::size_t k = 0; k < kShapes.size(); ++k)
    params.push_back(randn_seeded(kShapes[k], 7 + k).mul_(0.5).to(device).set_requires_grad(true));
  return params;
}

// Rank r's input for one parameter at one micro-step: the same on every call, different per rank.
at::Tensor input_of(int rank, int step, int micro, std::size_t param) {
  return randn_seeded(kShapes[param], 1000 * step + 100 * rank + 10 * micro + param);
}

// Nonlinear in the parameters, so gradients depend on where the parameters are.
at::Tensor loss_of(const std::vector<at::Tensor>& params, int rank, int step, int micro) {
  auto loss = at::zeros({}, params.front().options().requires_grad(false));
  for (std::size_t k = 0; k < params.size(); ++k) {
    if (k == kUnused) continue;
    loss = loss + at::tanh(params[k] * input_of(rank, step, micro, k).to(params[k].device())).pow(2).sum() *
                      static_cast<double>(k + 1);
  }
  return loss;
}

std::vector<float> flat_of(const at::Tensor& t) {
  auto c = t.detach().cpu().contiguous().view(-1);
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  return (a.detach().cpu() - ref).norm().item<double>() / std::max(ref.norm().item<double>(), 1e-30);
}

void sgd_step(const std::vector<at::Tensor>& params) {
  at::NoGradGuard no_grad;
  for (const auto& p : params) p.sub_(p.grad() * 0.1);
}

// What DDP must compute: per step, the average over ranks of each rank's summed micro-step gradients.
std::vector<std::vector<at::Tensor>> reference_grads() {
  auto params = make_params();
  std::vector<std::vector<at::Tensor>> out;
  for (int step = 0; step < kSteps; ++step) {
    for (auto& p : params) p.mutable_grad() = at::zeros_like(p);
    for (int r = 0; r < kWorld; ++r)
      for (int m = 0; m < kAccum; ++m) (loss_of(params, r, step, m) / kWorld).backward();
    std::vector<at::Tensor> grads;
    for (const auto& p : params) grads.push_back(p.grad().clone());
    out.push_back(grads);
    sgd_step(params);
  }
  return out;
}

struct RankRun {
  int buckets = 0;
  std::vector<std::vector<at::Tensor>> grads;        // per step, after finish()
  std::vector<std::vector<at::Tensor>> local_grads;  // per step, before the last micro-step: not yet reduced
  std::string error;
};

// backend "gloo": every rank on the CPU; "nccl": rank r on GPU r.
std::vector<RankRun> run_ranks(std::int64_t bucket_cap_bytes, const std::string& backend = "gloo") {
  const int port = launch::pick_free_port();
  std::vector<RankRun> runs(kWorld);
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) {
    threads.emplace_back([&, r] {
      auto& run = runs[static_cast<std::size_t>(r)];
      try {
        Rendezvous rv;
        rv.master_port = port;
        rv.rank = r;
        rv.world_size = kWorld;
        const bool nccl = backend == "nccl";
        if (nccl) device::set_cuda_device(r);
        auto comm = Communicator::connect(backend, rv, r);
        auto params = make_params(nccl ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(r)) : at::Device(at::kCPU));
        {
          GradReducer reducer(*comm, params, bucket_cap_bytes);
          run.buckets = reducer.bucket_count();
          for (int step = 0; step < kSteps; ++step) {
            reducer.zero_grad();
            for (int m = 0; m < kAccum; ++m) {
              const bool last = m == kAccum - 1;
              if (last) {
                std::vector<at::Tensor> local;
                for (const auto& p : params) local.push_back(p.grad().clone());
                run.local_grads.push_back(local);
              }
              reducer.set_sync(last);
              loss_of(params, r, step, m).backward();
            }
            reducer.finish();
            std::vector<at::Tensor> grads;
            for (const auto& p : params) grads.push_back(p.grad().clone());
            run.grads.push_back(grads);
            sgd_step(params);
          }
        }
        comm->shutdown();
      } catch (const std::exception& e) {
        run.error = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return runs;
}

void expect_reference(const std::vector<RankRun>& runs, double tolerance) {
  const auto reference = reference_grads();
  for (const auto& run : runs) ASSERT_TRUE(run.error.empty()) << run.error;
  EXPECT_EQ(runs[0].buckets, 4);
  for (int step = 0; step < kSteps; ++step) {
    for (std::size_t k = 0; k < kShapes.size(); ++k) {
      SCOPED_TRACE("step " + std::to_string(step) + ", parameter " + std::to_string(k));
      for (int r = 0; r < kWorld; ++r) {
        const auto& grad = runs[static_cast<std::size_t>(r)].grads[static_cast<std::size_t>(step)][k];
        if (k == kUnused) {
          EXPECT_EQ(grad.abs().max().item<float>(), 0.0f);
        } else {
          EXPECT_LT(rel_err(grad, reference[static_cast<std::size_t>(step)][k]), tolerance);
        }
      }
      // Both ranks hold the same averaged gradient, bit for bit.
      EXPECT_EQ(flat_of(runs[0].grads[static_cast<std::size_t>(step)][k]), flat_of(runs[1].grads[static_cast<std::size_t>(step)][k]));
      // During accumulation nothing was reduced: before the last micro-step each rank still held its own sum.
      if (k != kUnused)
        EXPECT_NE(flat_of(runs[0].local_grads[static_cast<std::size_t>(step)][k]),
                  flat_of(runs[1].local_grads[static_cast<std::size_t>(step)][k]));
    }
  }
}

TEST(GradReducer, SeveralBucketsUnusedParameterAndAccumulationMatchTheSingleProcessReference) {
  expect_reference(run_ranks(1 << 10), 1e-6);  // 1 KiB
}

// Labelled gpu (tests/CMakeLists.txt: test suites named Gpu*). fp32 on NCCL; the GPU's tanh may
// round differently from the CPU's reference, hence the looser tolerance.
TEST(GpuGradReducer, SeveralBucketsUnusedParameterAndAccumulationOnNcclMatchTheReference) {
  const auto runtime = device::runtime_info();
  if (!runtime.cuda_available || runtime.cuda_device_count < kWorld)
    GTEST_SKIP() << "needs " << kWorld << " visible GPUs for " << kWorld << " NCCL ranks, found "
                 << (runtime.cuda_available ? runtime.cuda_device_count : 0);
  expect_reference(run_ranks(1 << 10, "nccl"), 1e-5);
}

TEST(GradReducer, AMebibyteCapHoldsTheseParametersInOneBucket) {
  // The same parameters under the smallest MiB cap: one bucket, which is why the test above needs KiB.
  const auto runs = run_ranks(1 << 20);
  for (const auto& run : runs) ASSERT_TRUE(run.error.empty()) << run.error;
  EXPECT_EQ(runs[0].buckets, 1);
}

}  // namespace
}  // namespace ddpbench::ddp
