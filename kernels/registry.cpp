#include "kernels/ops.h"

#include "common/error.h"
#include "train/config.h"

namespace ddpbench::kernels {

// Each op's folder defines its spec; one line per op below.
OpSpec rms_norm_op();      // kernels/rms_norm/op.cpp
OpSpec add_rms_norm_op();  // kernels/rms_norm/op.cpp
OpSpec rope_qk_op();       // kernels/rope/op.cpp
OpSpec swiglu_op();        // kernels/swiglu/op.cpp
OpSpec linear_cross_entropy_op();  // kernels/linear_ce/op.cpp
OpSpec lora_linear_op();           // kernels/lora/op.cpp
OpSpec swiglu_mlp_op();            // kernels/mlp/op.cpp
OpSpec swiglu_mlp_lora_op();       // kernels/mlp/op.cpp

OpShape preset_op_shape(const std::string& preset, std::int64_t tokens, std::int64_t seq_len) {
  const auto s = train::preset_shape(preset);
  OpShape shape;
  shape.preset = preset;
  shape.tokens = tokens;
  shape.hidden = s.hidden;
  shape.intermediate = s.mlp;
  shape.heads = s.heads;
  shape.kv_heads = s.kv_heads;
  shape.head_dim = s.head_dim();
  shape.vocab = s.vocab;
  shape.seq_len = seq_len;
  return shape;
}

const std::vector<OpSpec>& registry() {
  static const std::vector<OpSpec> ops = [] {
    std::vector<OpSpec> all;
    all.push_back(rms_norm_op());
    all.push_back(add_rms_norm_op());
    all.push_back(rope_qk_op());
    all.push_back(swiglu_op());
    all.push_back(linear_cross_entropy_op());
    all.push_back(lora_linear_op());
    all.push_back(swiglu_mlp_op());
    all.push_back(swiglu_mlp_lora_op());
    return all;
  }();
  return ops;
}

const OpSpec& find_op(const std::string& name) {
  std::string names;
  for (const auto& op : registry()) {
    if (op.name == name) return op;
    names += (names.empty() ? "" : ", ") + op.name;
  }
  throw UsageError("unknown kernel op '" + name + "' (choose " + names + ")");
}

at::Generator make_generator(at::Device device, std::uint64_t seed) {
  auto gen = at::globalContext().defaultGenerator(device).clone();
  gen.set_current_seed(seed);
  return gen;
}

bool fused_kernels_built() {
#ifdef DDPBENCH_WITH_KERNELS
  return true;
#else
  return false;
#endif
}

}  // namespace ddpbench::kernels
