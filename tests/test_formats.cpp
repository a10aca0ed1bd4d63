// The file formats the built-in trainer shares with the Hugging Face reference trainer: the
// pre-tokenized data file, safetensors checkpoints and the config.json / adapter_config.json files.
#include <gtest/gtest.h>

#include "test_helpers.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "train/config.h"
#include "train/data.h"
#include "train/hf_config.h"
#include "train/safetensors.h"
#include "train/token_file.h"

namespace ddpbench {
namespace {

namespace st = train::safetensors;
using nlohmann::json;
using testing_helpers::contains;
using testing_helpers::message_of;
using testing_helpers::TempDirTest;
using train::TokenBatch;
using train::TokenFile;
using train::write_token_file;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
void put(std::string& bytes, std::size_t at, T v) {
  std::memcpy(bytes.data() + at, &v, sizeof v);
}

template <typename T>
void append(std::string& bytes, T v) {
  bytes.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// ---------------------------------------------------------------------------------------------
// Token files

using TokenFileTest = TempDirTest;

// Document d: tokens 10*d+1, 10*d+2, ... (all distinct, none is the padding id), of varied lengths.
std::vector<std::vector<std::uint32_t>> sample_documents() {
  const std::vector<std::size_t> lengths{2, 7, 4, 12, 3};
  std::vector<std::vector<std::uint32_t>> docs;
  for (std::size_t d = 0; d < lengths.size(); ++d) {
    std::vector<std::uint32_t> doc;
    for (std::size_t t = 0; t < lengths[d]; ++t) doc.push_back(static_cast<std::uint32_t>(100 * d + t + 1));
    docs.push_back(doc);
  }
  return docs;
}

TEST_F(TokenFileTest, RoundTrip) {
  const auto docs = sample_documents();
  write_token_file(path("t.bin"), 1000, docs);
  EXPECT_EQ(entries(), std::vector<std::string>{"t.bin"});  // no temporary left behind
  EXPECT_EQ(read_bytes(path("t.bin")).substr(0, 8), "DDPBTOK1");
  EXPECT_EQ(read_bytes(path("t.bin")).size(), 32u + 4 * (5 + 28));

  TokenFile f(path("t.bin"));
  EXPECT_EQ(f.header().version, 1u);
  EXPECT_EQ(f.header().vocab, 1000u);
  EXPECT_EQ(f.header().documents, 5u);
  EXPECT_EQ(f.header().tokens, 28u);
  for (std::size_t d = 0; d < docs.size(); ++d) EXPECT_EQ(f.document(d), docs[d]) << d;
  EXPECT_TRUE(contains(message_of<RunError>([&] { f.document(5); }), path("t.bin")));
}

TEST_F(TokenFileTest, RowsFollowTheMappingWithCutPaddingAndLabels) {
  const auto docs = sample_documents();
  write_token_file(path("t.bin"), 1000, docs);
  TokenFile f(path("t.bin"));
  const int seq_len = 5;
  const std::int64_t global_batch = 4;
  for (int step = 0; step < 4; ++step) {
    const TokenBatch b = f.rows(step, global_batch, 0, static_cast<int>(global_batch), seq_len);
    ASSERT_EQ(b.rows, 4);
    ASSERT_EQ(b.seq_len, seq_len);
    ASSERT_EQ(b.tokens.size(), 4u * seq_len);
    ASSERT_EQ(b.labels.size(), 4u * seq_len);
    for (int g = 0; g < 4; ++g) {
      // Row g of step s is document (s * global_batch + g) mod D: steps 1.. wrap around D = 5.
      const auto& doc = docs[static_cast<std::size_t>((step * global_batch + g) % 5)];
      const int len = std::min<int>(static_cast<int>(doc.size()), seq_len);
      EXPECT_EQ(b.lengths[g], len);
      for (int t = 0; t < seq_len; ++t) {
        const auto at = static_cast<std::size_t>(g * seq_len + t);
        if (t < len) {
          EXPECT_EQ(b.tokens[at], doc[t]) << step << " " << g << " " << t;
          EXPECT_EQ(b.labels[at], doc[t]);
        } else {
          EXPECT_EQ(b.tokens[at], train::kPadToken);
          EXPECT_EQ(b.labels[at], train::kIgnoreIndex);
        }
      }
    }
  }
  // Step 1 holds documents 4, 0, 1, 2 (wrapping around D = 5; 1 cut from 7 tokens to 5, 0 padded
  // from 2); step 2 holds 3 (cut from 12), 4, 0, 1.
  const TokenBatch b1 = f.rows(1, global_batch, 0, 4, seq_len);
  EXPECT_EQ(b1.lengths, (std::vector<int>{3, 2, 5, 4}));
  EXPECT_EQ(b1.real_tokens(), 14);
  EXPECT_EQ(b1.predicted_tokens(), 10);
  EXPECT_EQ(b1.padded_tokens(), 20);
  const TokenBatch b2 = f.rows(2, global_batch, 0, 4, seq_len);
  EXPECT_EQ(b2.lengths, (std::vector<int>{5, 3, 2, 5}));
  EXPECT_EQ(b2.tokens[0], 301);
  EXPECT_EQ(b2.tokens[4], 305);
}

TEST_F(TokenFileTest, AnySplitOfTheGlobalBatchSeesTheSameRows) {
  write_token_file(path("t.bin"), 1000, sample_documents());
  TokenFile f(path("t.bin"));
  // 2 ranks x 3 micro-batches x 2 sequences, sharded as SyntheticData shards.
  const int nproc = 2, grad_accum = 3, micro = 2, seq_len = 8;
  const std::int64_t global_batch = nproc * grad_accum * micro;
  for (int step : {0, 1, 7}) {
    const TokenBatch whole = f.rows(step, global_batch, 0, static_cast<int>(global_batch), seq_len);
    for (int r = 0; r < nproc; ++r)
      for (int m = 0; m < grad_accum; ++m) {
        const std::int64_t first = (static_cast<std::int64_t>(r) * grad_accum + m) * micro;
        const TokenBatch part = f.rows(step, global_batch, first, micro, seq_len);
        const auto begin = static_cast<std::ptrdiff_t>(first * seq_len), end = begin + micro * seq_len;
        EXPECT_EQ(part.tokens, std::vector<std::int64_t>(whole.tokens.begin() + begin, whole.tokens.begin() + end));
        EXPECT_EQ(part.labels, std::vector<std::int64_t>(whole.labels.begin() + begin, whole.labels.begin() + end));
        EXPECT_EQ(part.lengths, std::vector<int>(whole.lengths.begin() + first, whole.lengths.begin() + first + micro));
      }
  }
}

TEST_F(TokenFileTest, LargeStepsDoNotOverflowTheMapping) {
  const auto docs = sample_documents();
  write_token_file(path("t.bin"), 1000, docs);
  TokenFile f(path("t.bin"));
  const int step = std::numeric_limits<int>::max();
  const std::int64_t global_batch = std::int64_t{1} << 40;
  const TokenBatch b = f.rows(step, global_batch, global_batch - 1, 1, 16);
  const auto expected = static_cast<std::size_t>((static_cast<unsigned __int128>(step) * global_batch + global_batch - 1) % 5);
  EXPECT_EQ(b.tokens[0], docs[expected][0]);
  EXPECT_EQ(b.lengths[0], static_cast<int>(docs[expected].size()));
}

TEST_F(TokenFileTest, BadRequestsAreRunErrors) {
  write_token_file(path("t.bin"), 1000, sample_documents());
  TokenFile f(path("t.bin"));
  EXPECT_TRUE(contains(message_of<RunError>([&] { f.rows(0, 4, 3, 2, 8); }), path("t.bin")));
  message_of<RunError>([&] { f.rows(-1, 4, 0, 1, 8); });
  message_of<RunError>([&] { f.rows(0, 0, 0, 0, 8); });
  message_of<RunError>([&] { f.rows(0, 4, 0, 1, 0); });
  EXPECT_EQ(f.rows(0, 4, 4, 0, 8).rows, 0);
}

TEST_F(TokenFileTest, WriterRejectsBadDocumentsAndLeavesNoFile) {
  const auto p = path("t.bin");
  auto msg = message_of<UsageError>([&] { write_token_file(p, 1000, {{1, 2}, {5}}); });
  EXPECT_TRUE(contains(msg, p) && contains(msg, "document 1")) << msg;
  msg = message_of<UsageError>([&] { write_token_file(p, 10, {{1, 2}, {3, 10}}); });
  EXPECT_TRUE(contains(msg, p) && contains(msg, "id 10")) << msg;
  msg = message_of<UsageError>([&] { write_token_file(p, 10, {}); });
  EXPECT_TRUE(contains(msg, "no documents")) << msg;
  message_of<UsageError>([&] { write_token_file(p, 0, {{0, 0}}); });
  EXPECT_TRUE(entries().empty());
  EXPECT_TRUE(contains(message_of<RunError>([&] { write_token_file(path("no/such/dir/t.bin"), 10, {{1, 2}}); }), "no/such/dir"));
}

TEST_F(TokenFileTest, CorruptAndTruncatedFilesNameThePathAndTheFault) {
  write_token_file(path("good.bin"), 1000, sample_documents());
  const std::string good = read_bytes(path("good.bin"));
  const auto expect_bad = [&](const std::string& name, const std::string& bytes, const std::string& fault) {
    write_bytes(path(name), bytes);
    const auto msg = message_of<UsageError>([&] { TokenFile f(path(name)); });
    EXPECT_TRUE(contains(msg, path(name))) << name << ": " << msg;
    EXPECT_TRUE(contains(msg, fault)) << name << ": " << msg;
  };
  expect_bad("empty.bin", "", "truncated");
  expect_bad("short.bin", good.substr(0, 20), "truncated");
  expect_bad("cut.bin", good.substr(0, good.size() - 4), "truncated");
  expect_bad("odd.bin", good.substr(0, good.size() - 1), "truncated");
  expect_bad("long.bin", good + "xxxx", "trailing bytes");
  std::string b = good;
  b[0] = 'X';
  expect_bad("magic.bin", b, "bad magic");
  b = good;
  put<std::uint32_t>(b, 8, 2);
  expect_bad("version.bin", b, "version 2");
  b = good;
  put<std::uint32_t>(b, 12, 0);
  expect_bad("vocab.bin", b, "vocabulary");
  b = good;
  put<std::uint64_t>(b, 16, 0);
  expect_bad("nodocs.bin", b, "no documents");
  b = good;
  put<std::uint64_t>(b, 16, std::numeric_limits<std::uint64_t>::max());
  expect_bad("hugedocs.bin", b, "truncated");
  b = good;
  put<std::uint64_t>(b, 24, std::numeric_limits<std::uint64_t>::max() - 3);
  expect_bad("hugetokens.bin", b, "truncated");
  b = good;
  put<std::uint32_t>(b, 32, 1);
  expect_bad("length1.bin", b, "length 1");
  b = good;
  put<std::uint32_t>(b, 36, 8);
  expect_bad("lengthsum.bin", b, "exceed");
  b = good;
  put<std::uint32_t>(b, 36, 6);
  expect_bad("lengthsum2.bin", b, "less than");
  const auto msg = message_of<UsageError>([&] { TokenFile f(path("absent.bin")); });
  EXPECT_TRUE(contains(msg, path("absent.bin")) && contains(msg, "cannot open")) << msg;
}

TEST_F(TokenFileTest, TokenIdsAtOrAboveTheVocabularyAreCaughtWhenRead) {
  write_token_file(path("t.bin"), 1000, sample_documents());
  std::string b = read_bytes(path("t.bin"));
  // First token of document 1 (after the 5 lengths and the 2 tokens of document 0).
  put<std::uint32_t>(b, 32 + 4 * (5 + 2), 1000);
  write_bytes(path("t.bin"), b);
  TokenFile f(path("t.bin"));
  EXPECT_EQ(f.rows(0, 1, 0, 1, 8).lengths[0], 2);  // document 0 is fine
  for (const auto& msg : {message_of<UsageError>([&] { f.rows(1, 1, 0, 1, 8); }), message_of<UsageError>([&] { f.document(1); })})
    EXPECT_TRUE(contains(msg, path("t.bin")) && contains(msg, "id 1000")) << msg;
}

// ---------------------------------------------------------------------------------------------
// safetensors

using SafetensorsTest = TempDirTest;

TEST(SafetensorsDtype, Sizes) {
  const std::map<std::string, std::size_t> sizes{{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                                                 {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};
  for (const auto& [name, size] : sizes) EXPECT_EQ(st::dtype_size(name), size) << name;
  EXPECT_TRUE(contains(message_of<UsageError>([] { st::dtype_size("F8"); }), "F8"));
  message_of<UsageError>([] { st::dtype_size("bf16"); });
}

// Bytes of n elements of `size` bytes each, all different, so that a misplaced byte shows.
std::vector<unsigned char> pattern(std::size_t bytes, unsigned seed) {
  std::vector<unsigned char> out(bytes);
  for (std::size_t i = 0; i < bytes; ++i) out[i] = static_cast<unsigned char>((i * 131 + seed * 17 + 7) & 0xFF);
  return out;
}

TEST_F(SafetensorsTest, WriteThenReadBackEveryDtype) {
  struct Spec {
    std::string name, dtype;
    std::vector<std::int64_t> shape;
  };
  // Names out of alphabetical order: the file order must follow the data, not the JSON keys.
  const std::vector<Spec> specs{
      {"model.layers.0.self_attn.q_proj.weight", "BF16", {4, 6}},
      {"b", "F32", {2, 3}},
      {"a", "F64", {}},
      {"z.int64", "I64", {3}},
      {"empty", "I32", {0, 5}},
      {"half", "F16", {2, 2, 1}},
      {"i16", "I16", {3}},
      {"i8", "I8", {7}},
      {"u8", "U8", {5}},
      {"mask", "BOOL", {1}},
  };
  std::vector<std::vector<unsigned char>> buffers;
  std::vector<st::TensorData> tensors;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    std::size_t n = st::dtype_size(specs[i].dtype);
    for (auto d : specs[i].shape) n *= static_cast<std::size_t>(d);
    buffers.push_back(pattern(n, static_cast<unsigned>(i)));
  }
  for (std::size_t i = 0; i < specs.size(); ++i)
    tensors.push_back({specs[i].name, specs[i].dtype, specs[i].shape, buffers[i].data(), buffers[i].size()});
  const std::map<std::string, std::string> metadata{{"format", "pt"}, {"ddpbench", "step 3"}};
  st::write(path("m.safetensors"), tensors, metadata);
  EXPECT_EQ(entries(), std::vector<std::string>{"m.safetensors"});

  st::File f(path("m.safetensors"));
  ASSERT_EQ(f.tensors().size(), specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const auto& t = f.tensors()[i];
    EXPECT_EQ(t.name, specs[i].name);
    EXPECT_EQ(t.dtype, specs[i].dtype);
    EXPECT_EQ(t.shape, specs[i].shape);
    ASSERT_EQ(t.bytes, buffers[i].size()) << t.name;
    if (t.bytes > 0) {
      EXPECT_EQ(std::memcmp(t.data, buffers[i].data(), t.bytes), 0) << t.name;
    }
    EXPECT_EQ(f.find(specs[i].name), &t);
  }
  EXPECT_EQ(f.find("nope"), nullptr);
  EXPECT_EQ(f.find("__metadata__"), nullptr);
  EXPECT_EQ(f.metadata(), metadata);

  // Rewriting the same path replaces the file.
  st::write(path("m.safetensors"), {tensors[1]});
  st::File g(path("m.safetensors"));
  ASSERT_EQ(g.tensors().size(), 1u);
  EXPECT_EQ(g.tensors()[0].name, "b");
  EXPECT_TRUE(g.metadata().empty());
}

TEST_F(SafetensorsTest, TheDataStartsOnAnEightByteBoundary) {
  const std::vector<unsigned char> data(4, 1);
  for (std::size_t len = 1; len <= 16; ++len) {
    const std::string name(len, 'w');
    st::write(path("a.safetensors"), {{name, "U8", {4}, data.data(), data.size()}});
    const std::string bytes = read_bytes(path("a.safetensors"));
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    EXPECT_EQ((8 + n) % 8, 0u) << len;
    EXPECT_EQ(bytes[8], '{');
    const auto json_end = bytes.find_last_of('}', 8 + n - 1);
    EXPECT_EQ(bytes.substr(json_end + 1, 8 + n - json_end - 1), std::string(8 + n - json_end - 1, ' '));
    EXPECT_EQ(bytes.size(), 8 + n + 4);
    st::File f(path("a.safetensors"));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(f.tensors()[0].data) % 8, 0u);
  }
}

// A file assembled by hand from the specification, as another writer would produce it.
std::string hand_built(const std::string& header, const std::string& data, bool pad = true) {
  std::string h = header;
  if (pad) h.append((8 - h.size() % 8) % 8, ' ');
  std::string out;
  append<std::uint64_t>(out, h.size());
  return out + h + data;
}

std::string floats(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) append(out, v);
  return out;
}

TEST_F(SafetensorsTest, ReadsAHandBuiltFile) {
  write_bytes(path("h.safetensors"),
              hand_built(R"({"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", floats({1.0f, 2.0f})));
  st::File f(path("h.safetensors"));
  ASSERT_EQ(f.tensors().size(), 1u);
  const auto* x = f.find("x");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->dtype, "F32");
  EXPECT_EQ(x->shape, std::vector<std::int64_t>{2});
  ASSERT_EQ(x->bytes, 8u);
  float v[2];
  std::memcpy(v, x->data, sizeof v);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], 2.0f);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));

  // Unpadded header, no metadata, keys listed against the data order.
  write_bytes(path("u.safetensors"),
              hand_built(R"({"second":{"dtype":"I8","shape":[1],"data_offsets":[4,5]},"first":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
                         floats({3.5f}) + "\x7f", false));
  st::File u(path("u.safetensors"));
  ASSERT_EQ(u.tensors().size(), 2u);
  EXPECT_EQ(u.tensors()[0].name, "first");
  EXPECT_EQ(u.tensors()[1].name, "second");
  EXPECT_TRUE(u.tensors()[0].shape.empty());
  EXPECT_EQ(*static_cast<const signed char*>(u.tensors()[1].data), 127);
  EXPECT_TRUE(u.metadata().empty());
}

TEST_F(SafetensorsTest, WriterRejectsInconsistentTensorsAndLeavesNoFile) {
  const std::vector<unsigned char> data(16, 0);
  const auto p = path("w.safetensors");
  auto msg = message_of<UsageError>([&] { st::write(p, {{"a", "F32", {3}, data.data(), 16}}); });
  EXPECT_TRUE(contains(msg, p) && contains(msg, "'a'") && contains(msg, "needs 12")) << msg;
  msg = message_of<UsageError>([&] { st::write(p, {{"a", "U8", {2}, data.data(), 2}, {"a", "U8", {2}, data.data(), 2}}); });
  EXPECT_TRUE(contains(msg, "twice")) << msg;
  msg = message_of<UsageError>([&] { st::write(p, {{"a", "F8", {2}, data.data(), 2}}); });
  EXPECT_TRUE(contains(msg, "unknown dtype 'F8'")) << msg;
  msg = message_of<UsageError>([&] { st::write(p, {{"a", "U8", {-2}, data.data(), 2}}); });
  EXPECT_TRUE(contains(msg, "invalid shape")) << msg;
  message_of<UsageError>([&] { st::write(p, {{"__metadata__", "U8", {2}, data.data(), 2}}); });
  message_of<UsageError>([&] { st::write(p, {{"a", "U8", {2}, nullptr, 2}}); });
  EXPECT_TRUE(entries().empty());
  msg = message_of<RunError>([&] { st::write(path("no/dir/w.safetensors"), {{"a", "U8", {2}, data.data(), 2}}); });
  EXPECT_TRUE(contains(msg, "no/dir")) << msg;
}

TEST_F(SafetensorsTest, BadFilesNameThePathAndTheFault) {
  const auto expect_bad = [&](const std::string& name, const std::string& bytes, const std::string& fault) {
    write_bytes(path(name), bytes);
    const auto msg = message_of<UsageError>([&] { st::File f(path(name)); });
    EXPECT_TRUE(contains(msg, path(name) + ": ")) << name << ": " << msg;
    EXPECT_TRUE(contains(msg, fault)) << name << ": " << msg;
  };
  const auto one = [](const std::string& dtype, const std::string& shape, const std::string& offsets) {
    return R"({"x":{"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}}";
  };
  const std::string eight = floats({1.0f, 2.0f});

  expect_bad("empty", "", "truncated");
  expect_bad("short", "abcd", "truncated");
  std::string huge;
  append<std::uint64_t>(huge, std::uint64_t{1} << 40);
  expect_bad("hugeheader", huge + "{}", "implausible header length");
  const std::string good = hand_built(one("F32", "[2]", "[0,8]"), eight);
  expect_bad("cutheader", good.substr(0, 20), "truncated");
  expect_bad("cutdata", good.substr(0, good.size() - 1), "truncated");
  expect_bad("trailing", good + "xx", "2 bytes after the last tensor");
  expect_bad("notjson", hand_built("{\"x\": [", eight), "not valid JSON");
  expect_bad("notobject", hand_built("[1, 2]", ""), "not a JSON object");
  expect_bad("dtype", hand_built(one("Q4", "[2]", "[0,8]"), eight), "unknown dtype 'Q4'");
  expect_bad("nodtype", hand_built(R"({"x":{"shape":[2],"data_offsets":[0,8]}})", eight), "'dtype'");
  expect_bad("shape", hand_built(one("F32", "[-2]", "[0,8]"), eight), "'shape'");
  expect_bad("offsets1", hand_built(one("F32", "[2]", "[0]"), eight), "data_offsets");
  expect_bad("offsets2", hand_built(one("F32", "[2]", "[8,0]"), eight), "backwards");
  expect_bad("offsets3", hand_built(one("F32", "[2]", "[0,16]"), eight), "truncated");
  expect_bad("offsets4", hand_built(one("F32", "[3]", "[0,8]"), eight), "needs 12");
  expect_bad("offsets5", hand_built(one("F32", "[1]", "[4,8]"), eight), "gap of 4 bytes before tensor 'x'");
  expect_bad("overlap",
             hand_built(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
             "overlaps");
  expect_bad("metadata", hand_built(R"({"__metadata__":{"k":1}})", ""), "__metadata__");
  expect_bad("entry", hand_built(R"({"x":3})", ""), "'x'");
  const auto msg = message_of<UsageError>([&] { st::File f(path("absent")); });
  EXPECT_TRUE(contains(msg, path("absent")) && contains(msg, "cannot open")) << msg;
}

TEST_F(SafetensorsTest, AnEmptyCheckpointIsValid) {
  st::write(path("e.safetensors"), {}, {{"k", "v"}});
  st::File f(path("e.safetensors"));
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.metadata().at("k"), "v");
}

// ---------------------------------------------------------------------------------------------
// Hugging Face configs

TEST(HfConfig, EveryPresetRoundTripsThroughConfigJson) {
  for (const auto& name : train::preset_names()) {
    const auto s = train::preset_shape(name);
    // Through text, as a config.json file on disk would carry it.
    const json j = json::parse(train::hf_llama_config(s, "bfloat16").dump(2));
    const auto back = train::shape_from_hf_config(j, "ckpt/config.json");
    EXPECT_EQ(back.name, "from:ckpt/config.json");
    EXPECT_EQ(back.hidden, s.hidden) << name;
    EXPECT_EQ(back.layers, s.layers) << name;
    EXPECT_EQ(back.heads, s.heads) << name;
    EXPECT_EQ(back.kv_heads, s.kv_heads) << name;
    EXPECT_EQ(back.mlp, s.mlp) << name;
    EXPECT_EQ(back.vocab, s.vocab) << name;
    EXPECT_EQ(back.rope_theta, s.rope_theta) << name;
    EXPECT_EQ(back.norm_eps, s.norm_eps) << name;
    EXPECT_EQ(back.head_dim(), s.head_dim()) << name;
  }
}

TEST(HfConfig, WritesWhatTransformersReads) {
  const auto s = train::preset_shape("1b");
  const json j = train::hf_llama_config(s, "float32");
  EXPECT_EQ(j["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["hidden_size"], 2048);
  EXPECT_EQ(j["intermediate_size"], 8192);
  EXPECT_EQ(j["num_hidden_layers"], 16);
  EXPECT_EQ(j["num_attention_heads"], 32);
  EXPECT_EQ(j["num_key_value_heads"], 8);
  EXPECT_EQ(j["head_dim"], 64);
  EXPECT_EQ(j["vocab_size"], 128256);
  EXPECT_EQ(j["rms_norm_eps"], 1e-5);
  EXPECT_EQ(j["rope_theta"], 500000.0);
  EXPECT_EQ(j["rope_parameters"], (json{{"rope_type", "default"}, {"rope_theta", 500000.0}}));
  EXPECT_EQ(j["max_position_embeddings"], 131072);
  EXPECT_EQ(j["hidden_act"], "silu");
  EXPECT_EQ(j["attention_bias"], false);
  EXPECT_EQ(j["mlp_bias"], false);
  EXPECT_EQ(j["tie_word_embeddings"], false);
  EXPECT_EQ(j["initializer_range"], 0.02);
  EXPECT_EQ(j["use_cache"], false);
  EXPECT_EQ(j["dtype"], "float32");
  EXPECT_EQ(j["torch_dtype"], "float32");
  EXPECT_EQ(j["bos_token_id"], 1);
  EXPECT_EQ(j["eos_token_id"], 2);
  EXPECT_EQ(j["pad_token_id"], 0);
  EXPECT_EQ(train::hf_llama_config(s, "bfloat16")["torch_dtype"], "bfloat16");
  EXPECT_TRUE(contains(message_of<UsageError>([&] { train::hf_llama_config(s, "float16"); }), "float16"));
}

TEST(HfConfig, MissingOrWrongFieldsNameTheSourceAndTheField) {
  const json good = train::hf_llama_config(train::preset_shape("tiny"), "bfloat16");
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"}) {
    json j = good;
    j.erase(field);
    const auto msg = message_of<UsageError>([&] { train::shape_from_hf_config(j, "dir/config.json"); });
    EXPECT_TRUE(contains(msg, "dir/config.json") && contains(msg, field) && contains(msg, "missing")) << msg;
    j[field] = "64";
    EXPECT_TRUE(contains(message_of<UsageError>([&] { train::shape_from_hf_config(j, "c"); }), field));
    j[field] = 0;
    EXPECT_TRUE(contains(message_of<UsageError>([&] { train::shape_from_hf_config(j, "c"); }), field));
  }
  message_of<UsageError>([&] { train::shape_from_hf_config(json::array(), "c"); });
}

TEST(HfConfig, OptionalFieldsFollowTransformersDefaults) {
  const auto s = train::preset_shape("1b");
  json j = train::hf_llama_config(s, "bfloat16");
  j.erase("rope_parameters");
  EXPECT_EQ(train::shape_from_hf_config(j, "c").rope_theta, 500000.0);  // older Transformers
  j.erase("rope_theta");
  EXPECT_EQ(train::shape_from_hf_config(j, "c").rope_theta, 10000.0);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 250000.0}};
  j["rope_theta"] = 1.0;  // rope_parameters wins, as in Transformers 5
  EXPECT_EQ(train::shape_from_hf_config(j, "c").rope_theta, 250000.0);
  j.erase("num_key_value_heads");
  j.erase("head_dim");
  j.erase("rms_norm_eps");
  const auto back = train::shape_from_hf_config(j, "c");
  EXPECT_EQ(back.kv_heads, back.heads);
  EXPECT_EQ(back.norm_eps, 1e-6);
  j["num_key_value_heads"] = nullptr;
  EXPECT_EQ(train::shape_from_hf_config(j, "c").kv_heads, back.heads);
}

TEST(HfConfig, RejectsModelsTheBuiltInLlamaCannotRepresent) {
  const json good = train::hf_llama_config(train::preset_shape("1b"), "bfloat16");
  const auto rejected = [&](const char* field, const json& value, const std::string& fault) {
    json j = good;
    j[field] = value;
    const auto msg = message_of<UsageError>([&] { train::shape_from_hf_config(j, "c.json"); });
    EXPECT_TRUE(contains(msg, "c.json") && contains(msg, fault)) << field << ": " << msg;
  };
  // Llama 3.2's released config: the "llama3" frequency scaling is not the default RoPE.
  rejected("rope_scaling", {{"rope_type", "llama3"}, {"factor", 32.0}}, "llama3");
  rejected("rope_parameters", {{"rope_type", "llama3"}, {"rope_theta", 500000.0}}, "llama3");
  rejected("head_dim", 128, "head_dim");
  rejected("model_type", "mistral", "mistral");
  rejected("hidden_act", "gelu", "gelu");
  rejected("attention_bias", true, "attention_bias");
  rejected("num_key_value_heads", 5, "num_key_value_heads");
  rejected("num_attention_heads", 30, "num_attention_heads");
  json j = good;
  j["rope_scaling"] = nullptr;
  EXPECT_EQ(train::shape_from_hf_config(j, "c").hidden, 2048);
}

TEST(PeftConfig, IsALoraAdapterConfig) {
  const json j = train::peft_lora_config(16, 32.0, {"q_proj", "v_proj"});
  const json expected = {
      {"peft_type", "LORA"},      {"task_type", "CAUSAL_LM"},  {"r", 16},
      {"lora_alpha", 32.0},       {"target_modules", {"q_proj", "v_proj"}},
      {"lora_dropout", 0.0},      {"bias", "none"},            {"fan_in_fan_out", false},
      {"inference_mode", false},  {"init_lora_weights", true}, {"use_rslora", false},
      {"use_dora", false},        {"modules_to_save", nullptr}, {"base_model_name_or_path", nullptr},
  };
  EXPECT_EQ(j, expected);
  EXPECT_TRUE(j["modules_to_save"].is_null());
  EXPECT_EQ(j.dump().find("\"modules_to_save\":null") != std::string::npos, true);
}

}  // namespace
}  // namespace ddpbench
