#include "kernels/ops.h"

#include "common/error.h"
#include "kernels/linear_ce/linear_ce.h"
#include "kernels/lora/lora.h"
#include "train/config.h"

namespace ddpbench::kernels {

// Each op's folder defines its spec; one line per op below.
// OpSpec rms_norm_op();  (kernels/rms_norm/op.cpp), ...

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
    // all.push_back(rms_norm_op());
    all.push_back(linear_cross_entropy_op());
    all.push_back(lora_linear_op());
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

bool fused_kernels_built() {
#ifdef DDPBENCH_WITH_KERNELS
  return true;
#else
  return false;
#endif
}

}  // namespace ddpbench::kernels
