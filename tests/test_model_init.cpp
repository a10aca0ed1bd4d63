// Random initialisation: drawn in parallel chunks, the weights must not depend on the thread count.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include "train/model.h"

namespace ddpbench::train {
namespace {

std::vector<at::Tensor> weights_with_threads(int threads) {
  const int before = at::get_num_threads();
  at::set_num_threads(threads);
  Config cfg;
  cfg.preset = "tiny";
  cfg.mode = Mode::full;
  cfg.seed = 99;
  LlamaModel model(cfg, at::TensorOptions().dtype(at::kFloat));
  at::set_num_threads(before);
  std::vector<at::Tensor> out;
  for (const auto& p : model.parameters()) out.push_back(p.tensor.detach().clone());
  return out;
}

at::Tensor drawn_with_threads(int threads) {
  const int before = at::get_num_threads();
  at::set_num_threads(threads);
  auto gen = at::detail::createCPUGenerator(5);
  auto t = init_normal({100, 100}, 1.0, at::TensorOptions().dtype(at::kFloat), gen, /*chunk=*/999);
  at::set_num_threads(before);
  return t;
}

TEST(ModelInit, ChunkedDrawDoesNotDependOnTheThreadCount) {
  const auto one = drawn_with_threads(1), three = drawn_with_threads(3);
  EXPECT_TRUE(at::equal(one, three));
  // 11 chunks of 999 and a rest: each its own stream, none a copy of another.
  const auto flat = one.view({-1});
  EXPECT_FALSE(at::equal(flat.narrow(0, 0, 999), flat.narrow(0, 999, 999)));
  EXPECT_NEAR(flat.mean().item<double>(), 0.0, 0.05);
  EXPECT_NEAR(flat.std().item<double>(), 1.0, 0.05);
}

TEST(ModelInit, WeightsDoNotDependOnTheThreadCount) {
  const auto one = weights_with_threads(1);
  const auto three = weights_with_threads(3);
  ASSERT_EQ(one.size(), three.size());
  for (std::size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(at::equal(one[i], three[i])) << "parameter " << i;
}

TEST(ModelInit, TensorsAndChunksAreNotCopiesOfEachOther) {
  const auto w = weights_with_threads(2);
  // The embedding (tiny: 256 x 64) against the LM head, and the two halves of a matrix.
  EXPECT_FALSE(at::equal(w.front(), w.back()));
  const auto flat = w.front().view({-1});
  const auto half = flat.numel() / 2;
  EXPECT_FALSE(at::equal(flat.narrow(0, 0, half), flat.narrow(0, half, half)));
  EXPECT_NEAR(flat.std().item<double>(), 0.02, 0.002);
}

}  // namespace
}  // namespace ddpbench::train
