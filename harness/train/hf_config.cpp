#include "train/hf_config.h"

#include <limits>

#include "common/error.h"

namespace ddpbench::train {

namespace {

using nlohmann::json;

// Llama 3's context length; the built-in model has no limit of its own, and Transformers sizes
// nothing by it with the default RoPE.
constexpr int kMaxPositions = 131072;

int positive_int(const json& j, const std::string& field, const std::string& source) {
  const auto it = j.find(field);
  if (it == j.end()) throw UsageError(source + ": missing field '" + field + "'");
  if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > std::numeric_limits<int>::max())
    throw UsageError(source + ": field '" + field + "' must be a positive whole number, not " + it->dump());
  return static_cast<int>(it->get<std::int64_t>());
}

double positive_number(const json& j, const std::string& field, const std::string& source) {
  if (!j.is_number() || j.get<double>() <= 0) throw UsageError(source + ": field '" + field + "' must be a positive number, not " + j.dump());
  return j.get<double>();
}

// A rope_parameters / rope_scaling object, or null, must ask for the plain RoPE the built-in model computes.
void require_default_rope(const json& j, const std::string& field, const std::string& source) {
  if (j.is_null()) return;
  if (!j.is_object()) throw UsageError(source + ": field '" + field + "' must be an object");
  for (const char* key : {"rope_type", "type"}) {
    const auto it = j.find(key);
    if (it != j.end() && *it != "default")
      throw UsageError(source + ": " + field + "." + key + " is " + it->dump() +
                       "; the built-in model implements only the default RoPE");
  }
}

}  // namespace

json hf_llama_config(const ModelShape& s, const std::string& dtype) {
  if (dtype != "bfloat16" && dtype != "float32")
    throw UsageError("Hugging Face config dtype must be bfloat16 or float32, not '" + dtype + "'");
  return json{
      {"architectures", json::array({"LlamaForCausalLM"})},
      {"model_type", "llama"},
      {"hidden_size", s.hidden},
      {"intermediate_size", s.mlp},
      {"num_hidden_layers", s.layers},
      {"num_attention_heads", s.heads},
      {"num_key_value_heads", s.kv_heads},
      {"head_dim", s.head_dim()},
      {"vocab_size", s.vocab},
      {"rms_norm_eps", s.norm_eps},
      {"rope_theta", s.rope_theta},
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", s.rope_theta}}},
      {"max_position_embeddings", kMaxPositions},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"tie_word_embeddings", false},
      {"initializer_range", 0.02},
      {"use_cache", false},
      // Transformers 5 reads dtype, older releases torch_dtype.
      {"dtype", dtype},
      {"torch_dtype", dtype},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"pad_token_id", 0},
  };
}

ModelShape shape_from_hf_config(const json& j, const std::string& source) {
  if (!j.is_object()) throw UsageError(source + ": not a JSON object");
  const auto text_field = [&](const char* field, const char* wanted) {
    const auto it = j.find(field);
    if (it != j.end() && *it != wanted)
      throw UsageError(source + ": " + field + " is " + it->dump() + "; the built-in model needs \"" + wanted + "\"");
  };
  text_field("model_type", "llama");
  text_field("hidden_act", "silu");
  for (const char* field : {"attention_bias", "mlp_bias"}) {
    const auto it = j.find(field);
    if (it != j.end() && *it != false) throw UsageError(source + ": " + field + " is " + it->dump() + "; the built-in model has no biases");
  }

  ModelShape s;
  s.name = "from:" + source;
  s.hidden = positive_int(j, "hidden_size", source);
  s.mlp = positive_int(j, "intermediate_size", source);
  s.layers = positive_int(j, "num_hidden_layers", source);
  s.heads = positive_int(j, "num_attention_heads", source);
  // Transformers' defaults where a field may be left out: no grouping, and LlamaConfig's epsilon.
  s.kv_heads = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null() ? positive_int(j, "num_key_value_heads", source) : s.heads;
  s.vocab = positive_int(j, "vocab_size", source);
  s.norm_eps = j.contains("rms_norm_eps") ? positive_number(j["rms_norm_eps"], "rms_norm_eps", source) : 1e-6;

  if (s.hidden % s.heads != 0)
    throw UsageError(source + ": hidden_size " + std::to_string(s.hidden) + " is not a multiple of num_attention_heads " + std::to_string(s.heads));
  if (s.heads % s.kv_heads != 0)
    throw UsageError(source + ": num_attention_heads " + std::to_string(s.heads) + " is not a multiple of num_key_value_heads " +
                     std::to_string(s.kv_heads));
  if (j.contains("head_dim") && !j["head_dim"].is_null() && positive_int(j, "head_dim", source) != s.head_dim())
    throw UsageError(source + ": head_dim " + j["head_dim"].dump() + " differs from hidden_size / num_attention_heads (" +
                     std::to_string(s.head_dim()) + "), which the built-in model cannot represent");

  const auto params = j.find("rope_parameters");
  if (params != j.end()) require_default_rope(*params, "rope_parameters", source);
  if (const auto scaling = j.find("rope_scaling"); scaling != j.end()) require_default_rope(*scaling, "rope_scaling", source);
  if (params != j.end() && params->is_object() && params->contains("rope_theta"))
    s.rope_theta = positive_number((*params)["rope_theta"], "rope_parameters.rope_theta", source);
  else if (j.contains("rope_theta"))
    s.rope_theta = positive_number(j["rope_theta"], "rope_theta", source);
  else
    s.rope_theta = 10000.0;
  return s;
}

json peft_lora_config(int r, double alpha, const std::vector<std::string>& targets) {
  return json{
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", r},
      {"lora_alpha", alpha},
      {"target_modules", targets},
      {"lora_dropout", 0.0},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", false},
      {"init_lora_weights", true},
      {"use_rslora", false},
      {"use_dora", false},
      {"modules_to_save", nullptr},
      {"base_model_name_or_path", nullptr},
  };
}

}  // namespace ddpbench::train
