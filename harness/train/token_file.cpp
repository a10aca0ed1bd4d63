#include "train/token_file.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "common/error.h"
#include "common/strings.h"

namespace ddpbench::train {

// The format is little-endian and the loads below are plain copies.
static_assert(std::endian::native == std::endian::little, "token files assume a little-endian host");

namespace {

constexpr char kMagic[8] = {'D', 'D', 'P', 'B', 'T', 'O', 'K', '1'};
constexpr std::size_t kHeaderBytes = 32;

template <typename T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
void append(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

[[noreturn]] void bad_token(const std::string& path, std::uint64_t doc, std::size_t position, std::uint32_t id, std::uint32_t vocab) {
  throw UsageError("token file " + path + ": document " + std::to_string(doc) + " token " + std::to_string(position) + " has id " +
                   std::to_string(id) + ", not below the vocabulary size " + std::to_string(vocab));
}

}  // namespace

void write_token_file(const std::string& path, std::uint32_t vocab, const std::vector<std::vector<std::uint32_t>>& documents) {
  const std::string where = "token file " + path + ": ";
  if (vocab == 0) throw UsageError(where + "vocabulary size must be positive");
  // The reader rejects an empty file: the step -> document mapping is modulo D.
  if (documents.empty()) throw UsageError(where + "no documents");
  std::uint64_t tokens = 0;
  for (std::size_t d = 0; d < documents.size(); ++d) {
    const auto& doc = documents[d];
    if (doc.size() < 2)
      throw UsageError(where + "document " + std::to_string(d) + " has " + std::to_string(doc.size()) +
                       " tokens (at least 2 are needed for one predicted token)");
    if (doc.size() > std::numeric_limits<std::uint32_t>::max())
      throw UsageError(where + "document " + std::to_string(d) + " is longer than 2^32-1 tokens");
    for (std::size_t t = 0; t < doc.size(); ++t)
      if (doc[t] >= vocab) bad_token(path, d, t, doc[t], vocab);
    tokens += doc.size();
  }

  std::string bytes;
  bytes.reserve(kHeaderBytes + 4 * (documents.size() + tokens));
  bytes.append(kMagic, sizeof kMagic);
  append<std::uint32_t>(bytes, 1);
  append<std::uint32_t>(bytes, vocab);
  append<std::uint64_t>(bytes, documents.size());
  append<std::uint64_t>(bytes, tokens);
  for (const auto& doc : documents) append<std::uint32_t>(bytes, static_cast<std::uint32_t>(doc.size()));
  for (const auto& doc : documents) bytes.append(reinterpret_cast<const char*>(doc.data()), doc.size() * sizeof(std::uint32_t));
  write_file_atomic(path, bytes);
}

TokenFile::TokenFile(const std::string& path)
    : path_(path), map_(path, "token file " + path + ": ", kHeaderBytes, "shorter than the 32-byte header") {
  const std::string where = "token file " + path + ": ";
  const unsigned char* const base = map_.data();
  const std::size_t size = map_.size();
  if (std::memcmp(base, kMagic, sizeof kMagic) != 0) throw UsageError(where + "bad magic (not a ddpbench token file)");
  header_.version = load<std::uint32_t>(base + 8);
  header_.vocab = load<std::uint32_t>(base + 12);
  header_.documents = load<std::uint64_t>(base + 16);
  header_.tokens = load<std::uint64_t>(base + 24);
  if (header_.version != 1) throw UsageError(where + "unsupported version " + std::to_string(header_.version) + " (expected 1)");
  if (header_.vocab == 0) throw UsageError(where + "vocabulary size is 0");
  if (header_.documents == 0) throw UsageError(where + "no documents");
  // Sizes are compared in u32 words so that a corrupt count cannot overflow the arithmetic.
  const std::uint64_t words = (size - kHeaderBytes) / 4;
  const std::string declared = "the header declares " + std::to_string(header_.documents) + " documents and " +
                               std::to_string(header_.tokens) + " tokens but the file has " + std::to_string(size) + " bytes";
  if (header_.documents > words || header_.tokens > words - header_.documents) throw UsageError(where + "truncated: " + declared);
  if ((size - kHeaderBytes) % 4 != 0 || header_.tokens != words - header_.documents)
    throw UsageError(where + "trailing bytes: " + declared);
  // One entry past the last document, so that every length is a difference of two offsets.
  offsets_.resize(header_.documents + 1);
  std::uint64_t offset = 0;
  for (std::uint64_t d = 0; d < header_.documents; ++d) {
    const auto len = load<std::uint32_t>(base + kHeaderBytes + 4 * d);
    if (len < 2) throw UsageError(where + "document " + std::to_string(d) + " has length " + std::to_string(len) + " (at least 2)");
    offsets_[d] = offset;
    offset += len;
    if (offset > header_.tokens) break;
  }
  if (offset != header_.tokens)
    throw UsageError(where + "document lengths " + (offset > header_.tokens ? "exceed" : "sum to less than") +
                     " the declared " + std::to_string(header_.tokens) + " tokens");
  offsets_[header_.documents] = offset;
}

std::vector<std::uint32_t> TokenFile::document(std::uint64_t index) const {
  if (index >= header_.documents)
    throw RunError("token file " + path_ + ": document " + std::to_string(index) + " out of range (" +
                   std::to_string(header_.documents) + " documents)");
  const unsigned char* p = map_.data() + kHeaderBytes + 4 * (header_.documents + offsets_[index]);
  std::vector<std::uint32_t> doc(offsets_[index + 1] - offsets_[index]);
  std::memcpy(doc.data(), p, doc.size() * sizeof(std::uint32_t));
  // Token ids are checked as they are read rather than at open, which would touch every page.
  for (std::size_t t = 0; t < doc.size(); ++t)
    if (doc[t] >= header_.vocab) bad_token(path_, index, t, doc[t], header_.vocab);
  return doc;
}

TokenBatch TokenFile::rows(int step, std::int64_t global_batch, std::int64_t first, int count, int seq_len) const {
  if (step < 0 || global_batch <= 0 || first < 0 || count < 0 || seq_len < 1 || first + count > global_batch)
    throw RunError("token file " + path_ + ": bad batch request (step " + std::to_string(step) + ", global batch " +
                   std::to_string(global_batch) + ", rows " + std::to_string(first) + "+" + std::to_string(count) +
                   ", seq_len " + std::to_string(seq_len) + ")");
  TokenBatch b = TokenBatch::padded(count, seq_len);
  const std::uint64_t docs = header_.documents;
  // step * global_batch may exceed 64 bits for long runs over large batches.
  const auto base = static_cast<std::uint64_t>(static_cast<unsigned __int128>(step) * static_cast<std::uint64_t>(global_batch) % docs);
  for (int r = 0; r < count; ++r) {
    const std::uint64_t index = (base + static_cast<std::uint64_t>(first + r) % docs) % docs;
    const std::uint64_t begin = offsets_[index];
    const int len = static_cast<int>(std::min<std::uint64_t>(offsets_[index + 1] - begin, static_cast<std::uint64_t>(seq_len)));
    const unsigned char* p = map_.data() + kHeaderBytes + 4 * (docs + begin);
    b.lengths[r] = len;
    for (int t = 0; t < len; ++t) {
      const auto tok = load<std::uint32_t>(p + 4 * static_cast<std::size_t>(t));
      if (tok >= header_.vocab) bad_token(path_, index, static_cast<std::size_t>(t), tok, header_.vocab);
      const std::size_t at = static_cast<std::size_t>(r) * seq_len + t;
      b.tokens[at] = tok;
      b.labels[at] = tok;
    }
  }
  return b;
}

}  // namespace ddpbench::train
