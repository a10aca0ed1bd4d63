// Pre-tokenized data: the file both trainers (built-in and the Hugging Face reference) read, so
// that they train on exactly the same token batches.
//
// Format "ddpbench tokens v1", all integers little-endian:
//   offset 0   8 bytes  magic "DDPBTOK1"
//   offset 8   u32      version = 1
//   offset 12  u32      vocab size (every token id is < vocab)
//   offset 16  u64      number of documents D
//   offset 24  u64      number of tokens T (sum of the document lengths)
//   offset 32  u32[D]   document lengths (each >= 2)
//   then       u32[T]   token ids, documents one after another
//
// Mapping documents to batches: row g (0-based) of the global batch of optimizer step s is
// document (s * global_batch + g) mod D, where global_batch = nproc * nnodes * micro_batch *
// grad_accum sequences. Rank r's micro-batch m holds global rows (r * grad_accum + m) *
// micro_batch ... + micro_batch - 1 (the same sharding as SyntheticData). A document longer than
// seq_len is cut to its first seq_len tokens; a shorter one is right-padded with token 0 and label
// -100. Labels equal the tokens on real positions; the model shifts them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "train/data.h"

namespace ddpbench::train {

struct TokenFileHeader {
  std::uint32_t version = 1;
  std::uint32_t vocab = 0;
  std::uint64_t documents = 0;
  std::uint64_t tokens = 0;
};

// Writes documents (each a vector of token ids) atomically. RunError naming the path on failure;
// UsageError for a document shorter than 2 tokens or a token id >= vocab.
void write_token_file(const std::string& path, std::uint32_t vocab, const std::vector<std::vector<std::uint32_t>>& documents);

// Reads a token file (memory-mapped) and serves batches as the mapping above says.
class TokenFile {
 public:
  explicit TokenFile(const std::string& path);  // UsageError naming the path for a bad file
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  const TokenFileHeader& header() const { return header_; }
  std::vector<std::uint32_t> document(std::uint64_t index) const;
  // Global-batch rows [first, first + count) of optimizer step `step`, as TokenBatch.
  TokenBatch rows(int step, std::int64_t global_batch, std::int64_t first, int count, int seq_len) const;

 private:
  std::string path_;
  MappedFile map_;
  TokenFileHeader header_;
  std::vector<std::uint64_t> offsets_;  // token offset of each document
};

}  // namespace ddpbench::train
