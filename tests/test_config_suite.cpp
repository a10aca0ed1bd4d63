// Trainer configuration (settings table, lengths, presets, JSON, FLOP count) and suite files (matrix
// expansion, error locations, the suites shipped in suites/).
#include <gtest/gtest.h>

#include "test_helpers.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "results/cells.h"
#include "suite/suite.h"
#include "train/config.h"

#ifndef DDPBENCH_SOURCE_DIR
#define DDPBENCH_SOURCE_DIR "."
#endif

namespace ddpbench {
namespace {

using train::Config;
using train::Lengths;
using Values = std::vector<std::pair<std::string, std::string>>;

using testing_helpers::contains;
using testing_helpers::message_of;

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

// ---------------------------------------------------------------------------------------------
// Lengths

TEST(Lengths, FixedFollowsSeqLen) {
  const auto l = Lengths::parse("fixed", 96);
  EXPECT_FALSE(l.uniform);
  EXPECT_EQ(l.min, 96);
  EXPECT_EQ(l.max, 96);
  EXPECT_EQ(l.to_string(), "fixed");
}

TEST(Lengths, Uniform) {
  const auto l = Lengths::parse("uniform:16:64", 64);
  EXPECT_TRUE(l.uniform);
  EXPECT_EQ(l.min, 16);
  EXPECT_EQ(l.max, 64);
  EXPECT_EQ(l.to_string(), "uniform:16:64");
  EXPECT_EQ(Lengths::parse(l.to_string(), 64).to_string(), "uniform:16:64");
}

TEST(Lengths, MinAboveMaxNamesBoth) {
  const auto msg = message_of<UsageError>([] { Lengths::parse("uniform:9:3", 128); });
  EXPECT_TRUE(contains(msg, "MIN")) << msg;
  EXPECT_TRUE(contains(msg, "MAX")) << msg;
  EXPECT_TRUE(contains(msg, "9")) << msg;
  EXPECT_TRUE(contains(msg, "3")) << msg;
  EXPECT_TRUE(starts_with(msg, "--lengths")) << msg;
}

TEST(Lengths, MaxBeyondSeqLen) {
  const auto msg = message_of<UsageError>([] { Lengths::parse("uniform:2:999", 128); });
  EXPECT_TRUE(contains(msg, "999")) << msg;
  EXPECT_TRUE(contains(msg, "128")) << msg;
  // The edge itself is allowed.
  EXPECT_NO_THROW(Lengths::parse("uniform:2:128", 128));
}

TEST(Lengths, MinBelowTwo) {
  const auto msg = message_of<UsageError>([] { Lengths::parse("uniform:1:8", 128); });
  EXPECT_TRUE(contains(msg, "MIN")) << msg;
}

TEST(Lengths, NonNumbersAndGarbage) {
  const auto msg = message_of<UsageError>([] { Lengths::parse("uniform:a:b", 128); });
  EXPECT_TRUE(contains(msg, "uniform:a:b")) << msg;
  const auto msg2 = message_of<UsageError>([] { Lengths::parse("banana", 128); });
  EXPECT_TRUE(contains(msg2, "banana")) << msg2;
  EXPECT_THROW(Lengths::parse("uniform:16", 128), UsageError);
  EXPECT_THROW(Lengths::parse("uniform:16:32:64", 128), UsageError);
  EXPECT_THROW(Lengths::parse("", 128), UsageError);
}

// ---------------------------------------------------------------------------------------------
// Presets

TEST(Presets, Shapes) {
  const auto one = train::preset_shape("1b");
  EXPECT_EQ(one.name, "1b");
  EXPECT_EQ(one.hidden, 2048);
  EXPECT_EQ(one.layers, 16);
  EXPECT_EQ(one.heads, 32);
  EXPECT_EQ(one.kv_heads, 8);
  EXPECT_EQ(one.mlp, 8192);
  EXPECT_EQ(one.vocab, 128256);
  EXPECT_EQ(one.head_dim(), 64);

  const auto eight = train::preset_shape("8b");
  EXPECT_EQ(eight.hidden, 4096);
  EXPECT_EQ(eight.layers, 32);
  EXPECT_EQ(eight.heads, 32);
  EXPECT_EQ(eight.kv_heads, 8);
  EXPECT_EQ(eight.mlp, 14336);
  EXPECT_EQ(eight.vocab, 128256);

  const auto m350 = train::preset_shape("350m");
  EXPECT_EQ(m350.hidden, 1024);
  EXPECT_EQ(m350.layers, 16);
  EXPECT_EQ(m350.heads, 16);
  EXPECT_EQ(m350.kv_heads, 16);
  EXPECT_EQ(m350.mlp, 4096);
  EXPECT_EQ(m350.vocab, 32000);

  const auto tiny = train::preset_shape("tiny");
  EXPECT_EQ(tiny.hidden, 64);
  EXPECT_EQ(tiny.layers, 2);
  EXPECT_EQ(tiny.heads, 4);
  EXPECT_EQ(tiny.kv_heads, 2);
  EXPECT_EQ(tiny.vocab, 256);
}

TEST(Presets, EveryNameResolvesToAConsistentShape) {
  const auto& names = train::preset_names();
  EXPECT_EQ(names, (std::vector<std::string>{"tiny", "350m", "1b", "8b"}));
  for (const auto& n : names) {
    const auto s = train::preset_shape(n);
    EXPECT_EQ(s.name, n);
    EXPECT_EQ(s.hidden % s.heads, 0) << n;
    EXPECT_EQ(s.heads % s.kv_heads, 0) << n;  // grouped-query attention needs whole groups
  }
}

TEST(Presets, UnknownNamesTheChoices) {
  const auto msg = message_of<UsageError>([] { train::preset_shape("70b"); });
  EXPECT_TRUE(contains(msg, "70b")) << msg;
  for (const auto& n : {"tiny", "350m", "1b", "8b"}) EXPECT_TRUE(contains(msg, n)) << msg;
}

// ---------------------------------------------------------------------------------------------
// Settings

TEST(Settings, FlagNames) {
  EXPECT_EQ(train::flag_of("micro_batch"), "--micro-batch");
  EXPECT_EQ(train::flag_of("grad_accum"), "--grad-accum");
  EXPECT_EQ(train::flag_of("nproc"), "--nproc");
  EXPECT_EQ(train::flag_of("timeout_s"), "--timeout");
  // Every key of the table has a distinct flag.
  std::set<std::string> flags;
  for (const auto& s : train::settings()) EXPECT_TRUE(flags.insert(train::flag_of(s.key)).second) << s.key;
}

TEST(Settings, ApplyEveryKind) {
  Config c;
  train::apply_settings(c, {{"micro_batch", "8"},
                            {"nproc", "4"},
                            {"grad_accum", "3"},
                            {"preset", "1b"},
                            {"mode", "full"},
                            {"device", "cuda"},
                            {"lr", "3e-5"},
                            {"seed", "42"},
                            {"loss_norm", "local-tokens"},
                            {"timeout_s", "60"}});
  EXPECT_EQ(c.micro_batch, 8);
  EXPECT_EQ(c.nproc, 4);
  EXPECT_EQ(c.grad_accum, 3);
  EXPECT_EQ(c.preset, "1b");
  EXPECT_EQ(c.mode, train::Mode::full);
  EXPECT_EQ(c.device, "cuda");
  EXPECT_DOUBLE_EQ(c.lr, 3e-5);
  EXPECT_EQ(c.seed, 42u);
  EXPECT_EQ(c.loss_norm, train::LossNorm::local_tokens);
  EXPECT_EQ(c.timeout_s, 60);
  EXPECT_EQ(c.global_batch_sequences(), 4 * 8 * 3);
  EXPECT_NO_THROW(train::validate(c));
}

TEST(Settings, ImplFusedNeedsCudaTheBuiltinTrainerAndTheKernels) {
  Config c;
  c.impl = "fused";
  c.device = "cpu";
  auto msg = message_of<UsageError>([&] { train::validate(c); });
  EXPECT_TRUE(starts_with(msg, "--impl fused: the fused kernels run on CUDA only")) << msg;
  c.device = "cuda";
  c.trainer = "hf";
  msg = message_of<UsageError>([&] { train::validate(c); });
  EXPECT_TRUE(starts_with(msg, "--impl fused: only the built-in trainer")) << msg;
  c.trainer = "builtin";
#ifdef DDPBENCH_WITH_KERNELS
  EXPECT_NO_THROW(train::validate(c));
#else
  msg = message_of<UsageError>([&] { train::validate(c); });
  EXPECT_TRUE(contains(msg, "built without the fused kernels")) << msg;
#endif
  c.impl = "triton";
  msg = message_of<UsageError>([&] { train::validate(c); });
  EXPECT_TRUE(contains(msg, "choose baseline or fused")) << msg;
}

TEST(Settings, BadNumbersNameTheFlagAndValue) {
  Config c;
  auto msg = message_of<UsageError>([&] { train::apply_settings(c, {{"nproc", "x"}}); });
  EXPECT_TRUE(starts_with(msg, "--nproc: 'x'")) << msg;
  msg = message_of<UsageError>([&] { train::apply_settings(c, {{"micro_batch", "2.5"}}); });
  EXPECT_TRUE(starts_with(msg, "--micro-batch: '2.5'")) << msg;
  msg = message_of<UsageError>([&] { train::apply_settings(c, {{"lr", "fast"}}); });
  EXPECT_TRUE(starts_with(msg, "--lr: 'fast'")) << msg;
  msg = message_of<UsageError>([&] { train::apply_settings(c, {{"nproc", "99999999999"}}); });
  EXPECT_TRUE(starts_with(msg, "--nproc:")) << msg;  // beyond int
  msg = message_of<UsageError>([&] { train::apply_settings(c, {{"seed", "-1"}}); });
  EXPECT_TRUE(starts_with(msg, "--seed:")) << msg;  // unsigned
  EXPECT_THROW(train::apply_settings(c, {{"mode", "half"}}), UsageError);
  EXPECT_THROW(train::apply_settings(c, {{"preset", "13b"}}), UsageError);
  EXPECT_THROW(train::apply_settings(c, {{"loss_norm", "mean"}}), UsageError);
}

TEST(Settings, ValidateRejectsOutOfRange) {
  Config c;
  EXPECT_NO_THROW(train::validate(c));
  train::apply_settings(c, {{"nproc", "0"}});
  const auto msg = message_of<UsageError>([&] { train::validate(c); });
  EXPECT_TRUE(starts_with(msg, "--nproc:")) << msg;

  Config d;
  d.micro_batch = 0;
  EXPECT_TRUE(starts_with(message_of<UsageError>([&] { train::validate(d); }), "--micro-batch:"));
  Config e;
  e.device = "tpu";
  EXPECT_TRUE(contains(message_of<UsageError>([&] { train::validate(e); }), "tpu"));
  Config f;
  f.steps = 0;
  EXPECT_TRUE(starts_with(message_of<UsageError>([&] { train::validate(f); }), "--steps:"));
  Config g;
  g.trainer = "deepspeed";
  EXPECT_TRUE(contains(message_of<UsageError>([&] { train::validate(g); }), "deepspeed"));
  Config h;
  train::apply_settings(h, {{"debug_step_delay_ms", "-1"}});
  EXPECT_TRUE(starts_with(message_of<UsageError>([&] { train::validate(h); }), "--debug-step-delay-ms:"));
  train::apply_settings(h, {{"debug_step_delay_ms", "5"}, {"trainer", "hf"}});
  EXPECT_TRUE(contains(message_of<UsageError>([&] { train::validate(h); }), "only the built-in trainer"));
}

TEST(Settings, UnknownKeyRejected) {
  Config c;
  const auto msg = message_of<UsageError>([&] { train::apply_settings(c, {{"nproc", "2"}, {"bogus_key", "1"}}); });
  EXPECT_TRUE(contains(msg, "bogus_key")) << msg;
  EXPECT_EQ(c.nproc, 1) << "nothing applies when a key is unknown";
}

TEST(Settings, SeqLenAloneMovesFixedLengths) {
  Config c;
  train::apply_settings(c, {{"seq_len", "512"}});
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_FALSE(c.lengths.uniform);
  EXPECT_EQ(c.lengths.min, 512);
  EXPECT_EQ(c.lengths.max, 512);
  EXPECT_NO_THROW(train::validate(c));

  // Shrinking works too: the fixed lengths must not stay at the old, longer seq_len.
  train::apply_settings(c, {{"seq_len", "32"}});
  EXPECT_EQ(c.lengths.max, 32);
  EXPECT_NO_THROW(train::validate(c));
}

TEST(Settings, LengthsApplyAfterSeqLenWhateverTheOrder) {
  Config c;  // seq_len 128: uniform:16:256 only fits once seq_len is 256
  train::apply_settings(c, {{"lengths", "uniform:16:256"}, {"seq_len", "256"}});
  EXPECT_EQ(c.seq_len, 256);
  EXPECT_TRUE(c.lengths.uniform);
  EXPECT_EQ(c.lengths.min, 16);
  EXPECT_EQ(c.lengths.max, 256);
  EXPECT_NO_THROW(train::validate(c));

  Config d;
  train::apply_settings(d, {{"lengths", "fixed"}, {"seq_len", "64"}});
  EXPECT_EQ(d.lengths.max, 64);
}

TEST(Settings, LoraTargets) {
  Config c;
  EXPECT_EQ(c.lora_targets, train::lora_module_names());
  EXPECT_EQ(c.lora_targets.size(), 7u);
  train::apply_settings(c, {{"lora_targets", "q_proj,v_proj"}});
  EXPECT_EQ(c.lora_targets, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_NO_THROW(train::validate(c));

  train::apply_settings(c, {{"lora_targets", "q_proj,attn_proj"}});
  const auto msg = message_of<UsageError>([&] { train::validate(c); });
  EXPECT_TRUE(starts_with(msg, "--lora-targets:")) << msg;
  EXPECT_TRUE(contains(msg, "attn_proj")) << msg;
}

// ---------------------------------------------------------------------------------------------
// JSON

Config unusual_config() {
  Config c;
  c.trainer = "hf";
  c.preset = "350m";
  c.mode = train::Mode::full;
  c.impl = "baseline";
  c.device = "cuda";
  c.nproc = 4;
  c.micro_batch = 3;
  c.grad_accum = 5;
  c.seq_len = 256;
  c.lengths = Lengths{true, 8, 200};
  c.steps = 7;
  c.warmup = 1;
  c.seed = 0xFFFFFFFFFFFFFFF1ull;
  c.lr = 3.3e-5;
  c.weight_decay = 0.01;
  c.max_grad_norm = 0.5;
  c.lora_rank = 4;
  c.lora_alpha = 7.5;
  c.lora_targets = {"v_proj", "q_proj"};
  c.loss_norm = train::LossNorm::mean_of_micro_means;
  c.bucket_cap_mb = 50;
  c.timeout_s = 99;
  c.optim_state = train::OptimState::param;
  c.markov_states = 64;
  c.lr_warmup = 3;
  c.debug_step_delay_ms = 7;
  return c;
}

void expect_same(const Config& a, const Config& b) {
  EXPECT_EQ(a.trainer, b.trainer);
  EXPECT_EQ(a.preset, b.preset);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.impl, b.impl);
  EXPECT_EQ(a.device, b.device);
  EXPECT_EQ(a.nproc, b.nproc);
  EXPECT_EQ(a.micro_batch, b.micro_batch);
  EXPECT_EQ(a.grad_accum, b.grad_accum);
  EXPECT_EQ(a.seq_len, b.seq_len);
  EXPECT_EQ(a.lengths.uniform, b.lengths.uniform);
  EXPECT_EQ(a.lengths.min, b.lengths.min);
  EXPECT_EQ(a.lengths.max, b.lengths.max);
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.warmup, b.warmup);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.lr, b.lr);  // exact: the ranks must train with the very same numbers
  EXPECT_EQ(a.weight_decay, b.weight_decay);
  EXPECT_EQ(a.max_grad_norm, b.max_grad_norm);
  EXPECT_EQ(a.lora_rank, b.lora_rank);
  EXPECT_EQ(a.lora_alpha, b.lora_alpha);
  EXPECT_EQ(a.lora_targets, b.lora_targets);
  EXPECT_EQ(a.loss_norm, b.loss_norm);
  EXPECT_EQ(a.bucket_cap_mb, b.bucket_cap_mb);
  EXPECT_EQ(a.bucket_cap_kib, b.bucket_cap_kib);
  EXPECT_EQ(a.timeout_s, b.timeout_s);
  EXPECT_EQ(a.optim_state, b.optim_state);
  EXPECT_EQ(a.markov_states, b.markov_states);
  EXPECT_EQ(a.lr_warmup, b.lr_warmup);
  EXPECT_EQ(a.debug_step_delay_ms, b.debug_step_delay_ms);
}

TEST(ConfigJson, RoundTripsEveryField) {
  const Config c = unusual_config();
  expect_same(train::config_from_json(train::to_json(c)), c);
  // As the ranks receive it: serialised text.
  expect_same(train::config_from_json(nlohmann::json::parse(train::to_json(c).dump())), c);
  // And the defaults.
  expect_same(train::config_from_json(train::to_json(Config{})), Config{});
}

TEST(ConfigJson, RoundTripsEveryLossNorm) {
  for (auto n : {train::LossNorm::global_tokens, train::LossNorm::mean_of_micro_means, train::LossNorm::local_tokens}) {
    Config c;
    c.loss_norm = n;
    EXPECT_EQ(train::config_from_json(train::to_json(c)).loss_norm, n);
    EXPECT_EQ(train::parse_loss_norm(train::to_string(n)), n);
  }
  EXPECT_EQ(train::to_json(Config{})["loss_norm"], "global-tokens");
}

TEST(ConfigJson, BucketCapInKibRoundTripsAndIsLeftOutUnset) {
  Config c;
  // Unset, the key is absent, so the documents and cell ids of configurations without it stay.
  EXPECT_FALSE(train::to_json(c).contains("bucket_cap_kib"));
  EXPECT_EQ(c.bucket_cap_bytes(), std::int64_t{25} << 20);
  c.bucket_cap_kib = 48;
  EXPECT_EQ(train::to_json(c).at("bucket_cap_kib").get<int>(), 48);
  EXPECT_EQ(train::config_from_json(train::to_json(c)).bucket_cap_kib, 48);
  EXPECT_EQ(c.bucket_cap_bytes(), 48 * 1024);
}

TEST(Settings, BucketCapKibAloneAndOnlyForTheBuiltinTrainer) {
  Config c;
  train::apply_settings(c, {{"bucket_cap_kib", "64"}});
  EXPECT_NO_THROW(train::validate(c));
  EXPECT_EQ(c.bucket_cap_bytes(), 64 * 1024);
  Config both;
  EXPECT_TRUE(contains(message_of<UsageError>([&] { train::apply_settings(both, {{"bucket_cap_mb", "2"}, {"bucket_cap_kib", "64"}}); }),
                       "--bucket-cap-kib: give the bucket cap in MiB or in KiB, not both"));
  Config hf;
  train::apply_settings(hf, {{"trainer", "hf"}, {"bucket_cap_kib", "64"}});
  EXPECT_TRUE(contains(message_of<UsageError>([&] { train::validate(hf); }), "--bucket-cap-kib: only the built-in trainer"));
  Config negative;
  train::apply_settings(negative, {{"bucket_cap_kib", "-1"}});
  EXPECT_TRUE(contains(message_of<UsageError>([&] { train::validate(negative); }), "--bucket-cap-kib: must not be negative"));
}

// A cell's environment variables: part of its configuration and identity when set, absent (and the
// ids of configurations without them unchanged) when not; names checked, the launcher's refused.
TEST(Settings, EnvIsACellsOwnAndLeftOutUnset) {
  Config c;
  EXPECT_FALSE(train::to_json(c).contains("env"));
  const std::string id = results::cell_id("w", train::to_json(c));
  train::apply_settings(c, {{"env", "NCCL_ALGO=Ring;PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True,max_split_size_mb:128"}});
  EXPECT_NO_THROW(train::validate(c));
  EXPECT_EQ(c.env, (std::vector<std::string>{"NCCL_ALGO=Ring", "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True,max_split_size_mb:128"}));
  EXPECT_EQ(train::config_from_json(train::to_json(c)).env, c.env);
  EXPECT_NE(results::cell_id("w", train::to_json(c)), id);
  for (const auto& [value, message] : std::vector<std::pair<std::string, std::string>>{
           {"NCCL_ALGO", "--env: 'NCCL_ALGO' is not NAME=value"},
           {"1X=2", "--env: '1X=2' is not NAME=value"},
           {"A-B=2", "--env: 'A-B=2' is not NAME=value"},
           {"=2", "--env: '=2' is not NAME=value"},
           {"MASTER_PORT=1234", "--env: MASTER_PORT is set by the launcher for each rank"},
           {"A=1;A=2", "--env: A is given twice"}}) {
    Config bad;
    train::apply_settings(bad, {{"env", value}});
    EXPECT_TRUE(contains(message_of<UsageError>([&] { train::validate(bad); }), message)) << value;
  }
  Config empty_value;  // an empty value is a value (NAME= unsets nothing, it sets "")
  train::apply_settings(empty_value, {{"env", "NCCL_DEBUG="}});
  EXPECT_NO_THROW(train::validate(empty_value));
}

TEST(ConfigJson, CarriesGlobalBatch) {
  const auto j = train::to_json(unusual_config());
  EXPECT_EQ(j.at("global_batch_sequences").get<int>(), 4 * 3 * 5);
  EXPECT_EQ(j.at("lengths").get<std::string>(), "uniform:8:200");
  EXPECT_EQ(j.at("mode").get<std::string>(), "full");
}

TEST(ConfigJson, MissingOrWrongFieldIsUsageError) {
  const auto full = train::to_json(unusual_config());
  for (const char* field : {"nproc", "lengths", "lora_targets", "seed", "mode"}) {
    auto j = full;
    j.erase(field);
    const auto msg = message_of<UsageError>([&] { train::config_from_json(j); });
    EXPECT_TRUE(contains(msg, field)) << field << ": " << msg;
  }
  auto j = full;
  j["nproc"] = "two";
  EXPECT_THROW(train::config_from_json(j), UsageError);
  j = full;
  j["mode"] = "half";
  EXPECT_THROW(train::config_from_json(j), UsageError);
}

// ---------------------------------------------------------------------------------------------
// Model FLOPs (DESIGN.md, Metrics)

// Non-embedding matmul parameters of Llama-3.2-1B, by hand: q and o are d x d, k and v d x kv,
// gate/up/down d x mlp, plus the untied LM head d x vocab.
constexpr std::int64_t kD = 2048, kLayers = 16, kHeads = 32, kKvHeads = 8, kMlp = 8192, kVocab = 128256;
constexpr std::int64_t kKv = kKvHeads * (kD / kHeads);  // 512
constexpr std::int64_t kN1b = kLayers * (2 * kD * kD + 2 * kD * kKv + 3 * kD * kMlp) + kD * kVocab;

TEST(Flops, MatmulParameters1b) {
  static_assert(kN1b == 1'235'746'816);
  EXPECT_EQ(train::matmul_parameters(train::preset_shape("1b")), kN1b);
}

TEST(Flops, FullFineTuning) {
  Config c;
  c.preset = "1b";
  c.mode = train::Mode::full;
  c.seq_len = 2048;
  const double attention = 12.0 * kLayers * kD * 2048.0;
  EXPECT_DOUBLE_EQ(train::model_flops_per_token(c), 6.0 * static_cast<double>(kN1b) + attention);
  EXPECT_EQ(train::lora_parameters(c), 0);

  // The attention term grows with the sequence length; the parameter term does not.
  c.seq_len = 4096;
  EXPECT_DOUBLE_EQ(train::model_flops_per_token(c), 6.0 * static_cast<double>(kN1b) + 2 * attention);
}

TEST(Flops, Lora) {
  Config c;
  c.preset = "1b";
  c.mode = train::Mode::lora;
  c.lora_rank = 16;
  c.seq_len = 2048;
  ASSERT_EQ(c.lora_targets.size(), 7u);
  // r x (in + out) per adapted module: q, o: d->d; k, v: d->kv; gate, up: d->mlp; down: mlp->d.
  constexpr std::int64_t r = 16;
  constexpr std::int64_t per_layer =
      2 * r * (kD + kD) + 2 * r * (kD + kKv) + 2 * r * (kD + kMlp) + r * (kMlp + kD);
  constexpr std::int64_t n_lora = kLayers * per_layer;
  static_assert(n_lora == 11'272'192);
  EXPECT_EQ(train::lora_parameters(c), n_lora);
  const double attention = 12.0 * kLayers * kD * 2048.0;
  EXPECT_DOUBLE_EQ(train::model_flops_per_token(c),
                   4.0 * static_cast<double>(kN1b) + 6.0 * static_cast<double>(n_lora) + attention);

  // Fewer targets, fewer adapter parameters.
  c.lora_targets = {"q_proj", "v_proj"};
  EXPECT_EQ(train::lora_parameters(c), kLayers * (r * (kD + kD) + r * (kD + kKv)));
  EXPECT_LT(train::model_flops_per_token(c),
            4.0 * static_cast<double>(kN1b) + 6.0 * static_cast<double>(n_lora) + attention);
}

// ---------------------------------------------------------------------------------------------
// Suites

// Line 1 is the first line of the literal.
const char* kSuite = R"(name = "unit"
description = "two workloads"

[defaults]
preset = "tiny"
nproc = [1, 2]
micro_batch = [2, 4]
seq_len = 64
lr = 1e-3

[[workload]]
name = "lora-a"
mode = "lora"
lr = 5e-4
lora_targets = ["q_proj", "v_proj"]

[[workload]]
name = "full-b"
mode = "full"
seq_len = 32
)";

const suite::Cell& cell_named(const suite::Suite& s, const std::string& name) {
  for (const auto& c : s.cells)
    if (c.name == name) return c;
  throw std::runtime_error("no cell " + name);
}

TEST(Suite, ExpandsTheMatrix) {
  const auto s = suite::parse_suite(kSuite, "unit.toml");
  EXPECT_EQ(s.name, "unit");
  EXPECT_EQ(s.description, "two workloads");
  ASSERT_EQ(s.cells.size(), 8u);
  std::set<std::string> names;
  for (const auto& c : s.cells) names.insert(c.name);
  const std::set<std::string> expected{
      "lora-a/builtin/n1/b2/g1/s64", "lora-a/builtin/n1/b4/g1/s64", "lora-a/builtin/n2/b2/g1/s64",
      "lora-a/builtin/n2/b4/g1/s64", "full-b/builtin/n1/b2/g1/s32", "full-b/builtin/n1/b4/g1/s32",
      "full-b/builtin/n2/b2/g1/s32", "full-b/builtin/n2/b4/g1/s32",
  };
  EXPECT_EQ(names, expected);

  for (const auto& c : s.cells) {
    // The name is what the config says.
    EXPECT_EQ(c.name, c.workload + "/" + c.config.trainer + "/n" + std::to_string(c.config.nproc) + "/b" +
                          std::to_string(c.config.micro_batch) + "/g" + std::to_string(c.config.grad_accum) +
                          "/s" + std::to_string(c.config.seq_len));
    EXPECT_EQ(c.config.preset, "tiny");
    EXPECT_NO_THROW(train::validate(c.config));
  }
}

TEST(Suite, WorkloadOverridesDefaults) {
  const auto s = suite::parse_suite(kSuite, "unit.toml");
  const auto& lora = cell_named(s, "lora-a/builtin/n2/b4/g1/s64").config;
  EXPECT_EQ(lora.mode, train::Mode::lora);
  EXPECT_DOUBLE_EQ(lora.lr, 5e-4);  // the workload's, not the default 1e-3
  EXPECT_EQ(lora.seq_len, 64);
  EXPECT_EQ(lora.nproc, 2);
  EXPECT_EQ(lora.micro_batch, 4);
  EXPECT_EQ(lora.lora_targets, (std::vector<std::string>{"q_proj", "v_proj"}));  // a TOML list

  const auto& full = cell_named(s, "full-b/builtin/n1/b2/g1/s32").config;
  EXPECT_EQ(full.mode, train::Mode::full);
  EXPECT_DOUBLE_EQ(full.lr, 1e-3);  // the default
  EXPECT_EQ(full.seq_len, 32);      // the workload's
  EXPECT_FALSE(full.lengths.uniform);
  EXPECT_EQ(full.lengths.max, 32);  // fixed lengths follow the workload's seq_len
  EXPECT_EQ(full.lora_targets, train::lora_module_names());  // not leaked from the other workload
}

TEST(Suite, WorkloadScalarReplacesDefaultList) {
  const auto s = suite::parse_suite(R"(name = "x"
[defaults]
nproc = [1, 2, 4]
[[workload]]
name = "w"
nproc = 2
micro_batch = [1, 3]
)",
                                    "x.toml");
  ASSERT_EQ(s.cells.size(), 2u);
  for (const auto& c : s.cells) EXPECT_EQ(c.config.nproc, 2);
  EXPECT_EQ(cell_named(s, "w/builtin/n2/b3/g1/s128").config.micro_batch, 3);
}

// The UsageError of parse_suite(text, "s.toml").
std::string suite_error(const std::string& text) {
  return message_of<UsageError>([&] { suite::parse_suite(text, "s.toml"); });
}

TEST(Suite, EnvIsAListOfOneCellSetting) {
  const auto s = suite::parse_suite(R"(
name = "env"
[defaults]
preset = "tiny"
env = ["NCCL_ALGO=Ring"]
[[workload]]
name = "plain"
[[workload]]
name = "tuned"
env = ["NCCL_ALGO=Tree", "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True,max_split_size_mb:128"]
)",
                                    "env.toml");
  ASSERT_EQ(s.cells.size(), 2u);
  EXPECT_EQ(cell_named(s, "plain/builtin/n1/b2/g1/s128").config.env, (std::vector<std::string>{"NCCL_ALGO=Ring"}));
  EXPECT_EQ(cell_named(s, "tuned/builtin/n1/b2/g1/s128").config.env,
            (std::vector<std::string>{"NCCL_ALGO=Tree", "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True,max_split_size_mb:128"}));
  EXPECT_TRUE(contains(message_of<UsageError>([] {
                         suite::parse_suite("name = \"e\"\n[[workload]]\nname = \"w\"\nenv = [\"RANK=3\"]\n", "e.toml");
                       }),
                       "RANK is set by the launcher"));
}

TEST(SuiteErrors, UnknownSettingAtItsLine) {
  const auto msg = suite_error(R"(name = "x"
[defaults]
preset = "tiny"
micro_bach = 2
[[workload]]
name = "w"
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:4:")) << msg;
  EXPECT_TRUE(contains(msg, "micro_bach")) << msg;

  const auto msg2 = suite_error(R"(name = "x"
[[workload]]
name = "w"
mode = "lora"
colour = "red"
)");
  EXPECT_TRUE(starts_with(msg2, "s.toml:5:")) << msg2;
  EXPECT_TRUE(contains(msg2, "colour")) << msg2;
}

TEST(SuiteErrors, ListOnNonMatrixKey) {
  const auto msg = suite_error(R"(name = "x"

[defaults]
lr = [1, 2]
[[workload]]
name = "w"
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:4:")) << msg;
  EXPECT_TRUE(contains(msg, "lr")) << msg;
}

TEST(SuiteErrors, EmptyMatrixList) {
  const auto msg = suite_error(R"(name = "x"
[defaults]
nproc = []
[[workload]]
name = "w"
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:3:")) << msg;
}

TEST(SuiteErrors, BadValueInWorkload) {
  // The value is only judged once the workload's cells are built (defaults merged in), so the error
  // points at the workload's [[workload]] line and names the workload and the flag.
  const auto msg = suite_error(R"(name = "x"
[defaults]
preset = "tiny"

[[workload]]
name = "ok"

[[workload]]
name = "broken"
nproc = 0
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:8:")) << msg;
  EXPECT_TRUE(contains(msg, "broken")) << msg;
  EXPECT_TRUE(contains(msg, "--nproc")) << msg;
}

TEST(SuiteErrors, BadNumberInWorkload) {
  const auto msg = suite_error(R"(name = "x"
[[workload]]
name = "w"
micro_batch = "many"
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:2:")) << msg;
  EXPECT_TRUE(contains(msg, "--micro-batch")) << msg;
  EXPECT_TRUE(contains(msg, "many")) << msg;
}

TEST(SuiteErrors, TomlSyntax) {
  const auto msg = suite_error(R"(name = "x"
[defaults]
preset = "tiny
[[workload]]
name = "w"
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:3:")) << msg;

  const auto msg2 = suite_error(R"(name = "x"
[defaults]
nproc = 1
nproc = 2
[[workload]]
name = "w"
)");
  EXPECT_TRUE(starts_with(msg2, "s.toml:4:")) << msg2;  // a key given twice
}

TEST(SuiteErrors, MissingNames) {
  auto msg = suite_error(R"(description = "no name"
[[workload]]
name = "w"
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:")) << msg;
  EXPECT_TRUE(contains(msg, "name")) << msg;

  msg = suite_error(R"(name = "x"
[[workload]]
name = "w"

[[workload]]
mode = "full"
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:5:")) << msg;  // the workload without a name
  EXPECT_TRUE(contains(msg, "name")) << msg;
}

TEST(SuiteErrors, NoWorkloads) {
  const auto msg = suite_error(R"(name = "x"
[defaults]
preset = "tiny"
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:")) << msg;
  EXPECT_TRUE(contains(msg, "workload")) << msg;
}

TEST(SuiteErrors, UnknownTopLevelKeyAndDuplicateCells) {
  auto msg = suite_error(R"(name = "x"
nprocs = 2
[[workload]]
name = "w"
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:2:")) << msg;
  EXPECT_TRUE(contains(msg, "nprocs")) << msg;

  msg = suite_error(R"(name = "x"
[[workload]]
name = "w"
[[workload]]
name = "w"
)");
  EXPECT_TRUE(starts_with(msg, "s.toml:4:")) << msg;  // the second workload of that name
  EXPECT_TRUE(contains(msg, "duplicate")) << msg;
}

TEST(SuiteErrors, MissingFileIsUsageError) {
  const auto msg = message_of<UsageError>([] { suite::load_suite("/nonexistent/ddpbench/suite.toml"); });
  EXPECT_TRUE(contains(msg, "/nonexistent/ddpbench/suite.toml")) << msg;
}

TEST(Suite, MatrixKeys) {
  EXPECT_EQ(suite::matrix_keys(),
            (std::vector<std::string>{"trainer", "nproc", "micro_batch", "grad_accum", "seq_len"}));
}

TEST(ShippedSuites, SmokeCpu) {
  const auto s = suite::load_suite(std::string(DDPBENCH_SOURCE_DIR) + "/suites/smoke-cpu.toml");
  EXPECT_EQ(s.name, "smoke-cpu");
  ASSERT_EQ(s.cells.size(), 4u);
  std::set<int> nprocs;
  std::set<train::Mode> modes;
  for (const auto& c : s.cells) {
    EXPECT_EQ(c.config.device, "cpu") << c.name;
    EXPECT_EQ(c.config.preset, "tiny") << c.name;
    EXPECT_TRUE(c.config.lengths.uniform) << c.name;  // uneven lengths exercise the loss rule
    EXPECT_NO_THROW(train::validate(c.config)) << c.name;
    nprocs.insert(c.config.nproc);
    modes.insert(c.config.mode);
  }
  EXPECT_EQ(nprocs, (std::set<int>{1, 2}));
  EXPECT_EQ(modes, (std::set<train::Mode>{train::Mode::lora, train::Mode::full}));
  EXPECT_EQ(cell_named(s, "lora-tiny/builtin/n2/b2/g2/s64").config.lora_rank, 8);
}

TEST(ShippedSuites, SmokeGpu) {
  const auto s = suite::load_suite(std::string(DDPBENCH_SOURCE_DIR) + "/suites/smoke-gpu.toml");
  EXPECT_EQ(s.name, "smoke-gpu");
  ASSERT_EQ(s.cells.size(), 4u);
  std::set<int> nprocs;
  for (const auto& c : s.cells) {
    EXPECT_EQ(c.config.device, "cuda") << c.name;
    EXPECT_NO_THROW(train::validate(c.config)) << c.name;
    nprocs.insert(c.config.nproc);
    if (c.workload == "lora-1b") {
      EXPECT_EQ(c.config.preset, "1b");
      EXPECT_EQ(c.config.mode, train::Mode::lora);
    } else {
      EXPECT_EQ(c.workload, "full-350m");
      EXPECT_EQ(c.config.preset, "350m");
      EXPECT_EQ(c.config.mode, train::Mode::full);
      EXPECT_DOUBLE_EQ(c.config.lr, 3e-5);
    }
  }
  EXPECT_EQ(nprocs, (std::set<int>{1, 2}));
}

// ---------------------------------------------------------------------------------------------
// Cell identity (results/cells.h)

TEST(CellId, Fnv1a64MatchesTheReferenceVectors) {
  // The published FNV-1a test vectors (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
  EXPECT_EQ(results::fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(results::fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(results::fnv1a64("foobar"), 0x85944171f73967e8ull);
  EXPECT_EQ(results::short_hash("a"), "af63dc4c");
  EXPECT_EQ(results::short_hash(""), "cbf29ce4");
}

TEST(CellId, ReadablePartThenTheHashOfTheWork) {
  Config c;
  c.trainer = "hf";
  c.nproc = 4;
  c.micro_batch = 3;
  c.grad_accum = 2;
  c.seq_len = 128;
  const std::string id = results::cell_id("lora-1b", train::to_json(c));
  EXPECT_TRUE(starts_with(id, "lora-1b/hf/n4/b3/g2/s128#")) << id;
  const std::string hash = id.substr(id.find('#') + 1);
  EXPECT_EQ(hash.size(), 8u) << id;
  EXPECT_EQ(hash.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
  EXPECT_EQ(hash, results::short_hash("lora-1b\n" + results::work_config(train::to_json(c)).dump()));
  // Stable: the same configuration through the ranks' JSON text gives the same id.
  EXPECT_EQ(results::cell_id("lora-1b", train::to_json(train::config_from_json(nlohmann::json::parse(train::to_json(c).dump())))), id);
  EXPECT_EQ(results::scaling_group("lora-1b", train::to_json(c)), "lora-1b/hf/b3/g2/s128");
}

TEST(CellId, TheBuiltInTrainersImplementationIsPartOfItsName) {
  EXPECT_EQ(results::trainer_label("builtin", "baseline"), "builtin");
  EXPECT_EQ(results::trainer_label("builtin", "fused"), "builtin-fused");
  EXPECT_EQ(results::trainer_label("hf", "fused"), "hf");  // only the built-in trainer has implementations
  Config c;
  c.impl = "fused";
  EXPECT_TRUE(starts_with(results::cell_id("w", train::to_json(c)), "w/builtin-fused/n")) << results::cell_id("w", train::to_json(c));
  EXPECT_TRUE(starts_with(results::scaling_group("w", train::to_json(c)), "w/builtin-fused/b"));
  // The suites' trainer name for it sets both fields.
  Config from_suite;
  train::apply_settings(from_suite, {{"trainer", "builtin-fused"}});
  EXPECT_EQ(from_suite.trainer, "builtin");
  EXPECT_EQ(from_suite.impl, "fused");
}

TEST(CellId, FieldsThatDoNotChangeTheWorkDoNotChangeTheId) {
  const Config base;
  const std::string id = results::cell_id("w", train::to_json(base));
  Config same = base;
  same.timeout_s = base.timeout_s + 100;
  same.profile = !base.profile;
  same.debug_step_delay_ms = base.debug_step_delay_ms + 5;
  same.checkpoint = "/tmp/run-1/inputs/checkpoint";
  same.data_file = "/tmp/run-1/inputs/tokens.bin";
  same.bind_cpus = !base.bind_cpus;
  EXPECT_EQ(results::cell_id("w", train::to_json(same)), id);
  for (const auto& [key, value] : Values{{"lr", "1e-3"}, {"seed", "7"}, {"steps", "11"}, {"lora_rank", "4"},
                                         {"impl", "fused"}, {"mode", "full"}, {"lengths", "uniform:8:64"}}) {
    Config other = base;
    train::apply_settings(other, {{key, value}});
    EXPECT_NE(results::cell_id("w", train::to_json(other)), id) << key;
  }
  // The workload's name is part of the identity, so "x/y" and "x_y" differ after '/' -> '_' too.
  const auto a = results::cell_id("x/y", train::to_json(base));
  const auto b = results::cell_id("x_y", train::to_json(base));
  EXPECT_NE(results::cell_file_name(a, 1), results::cell_file_name(b, 1));
}

TEST(CellId, FileNamesAreFlatAndNumberTheRepeat) {
  EXPECT_EQ(results::cell_file_name("lora-1b/hf/n4/b3/g2/s128#0a1b2c3d", 2), "lora-1b_hf_n4_b3_g2_s128-0a1b2c3d-r2.json");
}

TEST(CellId, EveryCellOfEveryShippedSuiteHasItsOwnFile) {
  std::set<std::string> files;
  std::size_t cells = 0;
  for (const char* name : {"smoke-cpu", "smoke-gpu", "lora-1b", "full-350m", "gate-cpu"}) {
    const auto s = suite::load_suite(std::string(DDPBENCH_SOURCE_DIR) + "/suites/" + name + ".toml");
    for (const auto& c : s.cells) {
      const auto id = results::cell_id(c.workload, train::to_json(c.config));
      EXPECT_TRUE(starts_with(id, c.name + "#")) << id;  // the suite's cell name is the readable part
      files.insert(results::cell_file_name(id, 1));
      ++cells;
    }
  }
  EXPECT_EQ(files.size(), cells);
}

}  // namespace
TEST(LearningRate, LinearWarmupThenConstant) {
  Config c;
  c.lr = 1e-3;
  EXPECT_DOUBLE_EQ(c.lr_at(0), 1e-3);  // no warm-up
  c.lr_warmup = 4;
  EXPECT_DOUBLE_EQ(c.lr_at(0), 0.25e-3);
  EXPECT_DOUBLE_EQ(c.lr_at(3), 1e-3);
  EXPECT_DOUBLE_EQ(c.lr_at(10), 1e-3);
  EXPECT_THROW(train::apply_settings(c, {{"lr_warmup", "x"}}), UsageError);
  train::apply_settings(c, {{"lr_warmup", "-1"}});
  EXPECT_THROW(train::validate(c), UsageError);
}

}  // namespace ddpbench

namespace {

// Strong scaling: the suite holds the global batch across rank counts and each cell derives its
// gradient accumulation; the cells form one scaling group, and their documents say the mode.
TEST(Suite, StrongScalingDerivesGradAccumFromTheGlobalBatch) {
  const auto s = ddpbench::suite::parse_suite(
      "name = \"strong\"\n[defaults]\npreset = \"tiny\"\nmicro_batch = 2\nglobal_batch = 16\nnproc = [1, 2, 4]\n"
      "[[workload]]\nname = \"w\"\n",
      "strong.toml");
  ASSERT_EQ(s.cells.size(), 3u);
  std::set<std::string> groups;
  for (const auto& [cell, accum] : std::vector<std::pair<std::size_t, int>>{{0, 8}, {1, 4}, {2, 2}}) {
    const auto& c = s.cells[cell].config;
    EXPECT_EQ(c.grad_accum, accum) << s.cells[cell].name;
    EXPECT_EQ(c.global_batch_sequences(), 16);
    const auto j = ddpbench::train::to_json(c);
    EXPECT_EQ(j["scaling_mode"], "strong");
    groups.insert(ddpbench::results::scaling_group("w", j));
  }
  EXPECT_EQ(s.cells[2].name, "w/builtin/n4/b2/g2/s128");
  EXPECT_EQ(groups.size(), 1u);
  EXPECT_EQ(*groups.begin(), "w/builtin/b2/G16/s128");
  // Weak scaling keeps one group per accumulation, as before.
  EXPECT_EQ(ddpbench::train::to_json(ddpbench::train::Config{})["scaling_mode"], "weak");
}

TEST(Suite, LearningRateFollowsTheGlobalBatchByTheStatedRule) {
  for (const auto& [rule, factor] : std::vector<std::pair<std::string, double>>{{"none", 1.0}, {"linear", 4.0}, {"sqrt", 2.0}}) {
    SCOPED_TRACE(rule);
    const auto weak = ddpbench::suite::parse_suite("name = \"lr\"\n[defaults]\npreset = \"tiny\"\nlr = 1e-3\nnproc = [1, 4]\n"
                                                   "lr_scaling = \"" + rule + "\"\n[[workload]]\nname = \"w\"\n",
                                                   "lr.toml");
    ASSERT_EQ(weak.cells.size(), 2u);
    EXPECT_DOUBLE_EQ(weak.cells[0].config.lr, 1e-3);
    EXPECT_NEAR(weak.cells[1].config.lr, 1e-3 * factor, 1e-15);
    // The global batch held fixed: lr stays whatever the rule.
    const auto strong = ddpbench::suite::parse_suite("name = \"lr\"\n[defaults]\npreset = \"tiny\"\nlr = 1e-3\nnproc = [1, 4]\n"
                                                     "micro_batch = 1\nglobal_batch = 8\nlr_scaling = \"" + rule +
                                                         "\"\n[[workload]]\nname = \"w\"\n",
                                                     "lr.toml");
    EXPECT_DOUBLE_EQ(strong.cells[1].config.lr, 1e-3);
  }
}

TEST(Suite, GlobalBatchThatDoesNotDivideOrComesWithGradAccumIsRefused) {
  using ddpbench::UsageError;
  const auto expect_error = [](const std::string& text, const std::string& part) {
    try {
      ddpbench::suite::parse_suite(text, "bad.toml");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error("name = \"b\"\n[defaults]\npreset = \"tiny\"\nmicro_batch = 4\nglobal_batch = 10\n[[workload]]\nname = \"w\"\n",
               "do not divide into micro-batches of 4 on 1 rank(s)");
  expect_error("name = \"b\"\n[defaults]\npreset = \"tiny\"\ngrad_accum = 2\nglobal_batch = 8\n[[workload]]\nname = \"w\"\n",
               "not both");
  expect_error("name = \"b\"\n[defaults]\npreset = \"tiny\"\nlr_scaling = \"cubic\"\n[[workload]]\nname = \"w\"\n",
               "unknown rule 'cubic'");
}

}  // namespace

namespace {

// aa = true adds, beside each one-rank built-in cell, the A/A cell of equal work: half the
// micro-batch, twice the accumulation, the same global batch, workload "<name>-aa".
TEST(Suite, AaAddsTheHalfMicroBatchTwinOfEachOneRankBuiltinCell) {
  const auto s = ddpbench::suite::parse_suite(
      "name = \"a\"\naa = true\n[defaults]\npreset = \"tiny\"\nmicro_batch = 4\ngrad_accum = 1\n"
      "trainer = [\"builtin\", \"hf\"]\nnproc = [1, 2]\n[[workload]]\nname = \"w\"\n",
      "aa.toml");
  std::vector<std::string> names;
  for (const auto& c : s.cells) names.push_back(c.name);
  ASSERT_EQ(s.cells.size(), 5u) << ::testing::PrintToString(names);
  const auto twin = std::find_if(s.cells.begin(), s.cells.end(), [](const auto& c) { return c.workload == "w-aa"; });
  ASSERT_NE(twin, s.cells.end());
  EXPECT_EQ(twin->name, "w-aa/builtin/n1/b2/g2/s128");
  EXPECT_EQ(twin->config.global_batch_sequences(), 4);
  EXPECT_THROW(ddpbench::suite::parse_suite("name = \"a\"\naa = true\n[defaults]\npreset = \"tiny\"\nmicro_batch = 3\n"
                                            "[[workload]]\nname = \"w\"\n", "aa.toml"),
               ddpbench::UsageError);
  EXPECT_THROW(ddpbench::suite::parse_suite("name = \"a\"\naa = 1\n[[workload]]\nname = \"w\"\n", "aa.toml"), ddpbench::UsageError);
  EXPECT_EQ(twin->aa_of, "w/builtin/n1/b4/g1/s128");
}

// aa = [trainers]: the twin of each listed trainer's one-rank cell (builtin-fused by its label),
// named after the cell it repeats; the unlisted trainers and the wider cells get none.
TEST(Suite, AaListTwinsEachListedTrainersOneRankCell) {
  const auto s = ddpbench::suite::parse_suite(
      "name = \"a\"\naa = [\"builtin\", \"builtin-fused\", \"hf\"]\n[defaults]\npreset = \"tiny\"\ndevice = \"cuda\"\n"
      "micro_batch = 4\ntrainer = [\"builtin\", \"builtin-fused\", \"hf\", \"liger\"]\nnproc = [1, 2]\n[[workload]]\nname = \"w\"\n",
      "aa.toml");
  std::map<std::string, std::string> twins;  // twin -> the cell it repeats
  for (std::size_t i = 0; i < s.cells.size(); ++i) {
    const auto& c = s.cells[i];
    if (c.aa_of.empty()) continue;
    twins[c.name] = c.aa_of;
    ASSERT_GT(i, 0u);
    const auto& cell = s.cells[i - 1];  // right after the cell it repeats: equal work, split in two
    EXPECT_EQ(cell.name, c.aa_of);
    EXPECT_EQ(c.config.micro_batch * 2, cell.config.micro_batch);
    EXPECT_EQ(c.config.grad_accum, cell.config.grad_accum * 2);
    EXPECT_EQ(c.config.global_batch_sequences(), cell.config.global_batch_sequences());
    EXPECT_EQ(c.config.trainer, cell.config.trainer);
    EXPECT_EQ(c.config.impl, cell.config.impl);
  }
  EXPECT_EQ(twins, (std::map<std::string, std::string>{{"w-aa/builtin/n1/b2/g2/s128", "w/builtin/n1/b4/g1/s128"},
                                                       {"w-aa/builtin-fused/n1/b2/g2/s128", "w/builtin-fused/n1/b4/g1/s128"},
                                                       {"w-aa/hf/n1/b2/g2/s128", "w/hf/n1/b4/g1/s128"}}));
  EXPECT_EQ(s.cells.size(), 4u * 2 + 3);
}

TEST(SuiteErrors, AaNamesTheTrainerItCannotTwin) {
  const auto message = [](const std::string& text) {
    return ddpbench::testing_helpers::message_of<ddpbench::UsageError>([&] { ddpbench::suite::parse_suite(text, "aa.toml"); });
  };
  const std::string tail = "[defaults]\npreset = \"tiny\"\nmicro_batch = 4\ntrainer = [\"builtin\", \"hf\"]\n[[workload]]\nname = \"w\"\n";
  const auto unknown = message("name = \"a\"\naa = [\"builtin\", \"unslot\"]\n" + tail);
  EXPECT_TRUE(ddpbench::testing_helpers::contains(unknown, "aa.toml:2: aa: unknown trainer 'unslot'")) << unknown;
  EXPECT_TRUE(ddpbench::testing_helpers::contains(message("name = \"a\"\naa = [\"builtin\", 3]\n" + tail), "list of trainer names"));
  EXPECT_TRUE(ddpbench::testing_helpers::contains(message("name = \"a\"\naa = \"hf\"\n" + tail), "'aa' must be true, false or a list"));
  // Listed, but no one-rank cell of it: a typo in the trainer list or in aa.
  EXPECT_TRUE(ddpbench::testing_helpers::contains(message("name = \"a\"\naa = [\"liger\"]\n" + tail),
                                                  "no workload has a one-rank cell of trainer 'liger'"));
  EXPECT_NO_THROW(ddpbench::suite::parse_suite("name = \"a\"\naa = false\n" + tail, "aa.toml"));
}

// profile = [...] adds, after each cell of a listed trainer at the workload's largest rank count,
// its profiled twin (workload "<name>-profile"); the measured cells stay unprofiled.
TEST(Suite, ProfileAddsTheProfiledTwinOfTheListedTrainersAtTheLargestRankCount) {
  const auto s = ddpbench::suite::parse_suite(
      "name = \"p\"\nprofile = [\"builtin\", \"hf\"]\n[defaults]\npreset = \"tiny\"\ndevice = \"cuda\"\n"
      "trainer = [\"builtin\", \"hf\", \"liger\"]\nnproc = [1, 2, 4]\n[[workload]]\nname = \"w\"\n[[workload]]\nname = \"v\"\nnproc = [1, 2]\n",
      "p.toml");
  std::vector<std::string> profiled;
  for (std::size_t i = 0; i < s.cells.size(); ++i) {
    const auto& c = s.cells[i];
    if (c.workload.size() < 8 || c.workload.substr(c.workload.size() - 8) != "-profile") {
      EXPECT_FALSE(c.config.profile) << c.name;
      continue;
    }
    EXPECT_TRUE(c.config.profile) << c.name;
    profiled.push_back(c.name);
    // Right after the cell it profiles, which is the same configuration unprofiled.
    ASSERT_GT(i, 0u);
    auto plain = c.config;
    plain.profile = false;
    EXPECT_EQ(ddpbench::train::to_json(plain), ddpbench::train::to_json(s.cells[i - 1].config)) << c.name;
  }
  EXPECT_EQ(profiled, (std::vector<std::string>{"w-profile/builtin/n4/b2/g1/s128", "w-profile/hf/n4/b2/g1/s128",
                                                "v-profile/builtin/n2/b2/g1/s128", "v-profile/hf/n2/b2/g1/s128"}));
  EXPECT_EQ(s.cells.size(), 3u * 3 + 3u * 2 + 4);
}

TEST(SuiteErrors, ProfileNamesTrainersThatCanBeProfiledThere) {
  const auto message = [](const std::string& text) {
    return ddpbench::testing_helpers::message_of<ddpbench::UsageError>([&] { ddpbench::suite::parse_suite(text, "p.toml"); });
  };
  EXPECT_TRUE(ddpbench::testing_helpers::contains(message("name = \"p\"\nprofile = \"builtin\"\n[[workload]]\nname = \"w\"\n"), "'profile' must be a list"));
  EXPECT_TRUE(ddpbench::testing_helpers::contains(message("name = \"p\"\nprofile = [\"nope\"]\n[[workload]]\nname = \"w\"\n"), "unknown trainer 'nope'"));
  // On the CPU only the built-in trainer records its phases; a Python trainer needs CUPTI.
  EXPECT_TRUE(ddpbench::testing_helpers::contains(message("name = \"p\"\nprofile = [\"hf\"]\n[defaults]\ntrainer = \"hf\"\n[[workload]]\nname = \"w\"\n"),
                       "needs --device cuda"));
  EXPECT_NO_THROW(ddpbench::suite::parse_suite("name = \"p\"\nprofile = [\"builtin\"]\n[[workload]]\nname = \"w\"\n", "p.toml"));
}

}  // namespace
