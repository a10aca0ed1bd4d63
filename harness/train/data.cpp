#include "train/data.h"

#include <algorithm>
#include <numeric>

namespace ddpbench::train {

std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

namespace {
std::uint64_t key(std::uint64_t seed, std::uint64_t a, std::uint64_t b, std::uint64_t c) {
  return mix64(mix64(mix64(mix64(seed) ^ a) ^ b) ^ c);
}
}  // namespace

TokenBatch TokenBatch::padded(int rows, int seq_len) {
  TokenBatch b;
  b.rows = rows;
  b.seq_len = seq_len;
  b.tokens.assign(static_cast<std::size_t>(rows) * seq_len, kPadToken);
  b.labels.assign(b.tokens.size(), kIgnoreIndex);
  b.lengths.resize(static_cast<std::size_t>(rows));
  return b;
}

std::int64_t TokenBatch::real_tokens() const { return std::accumulate(lengths.begin(), lengths.end(), std::int64_t{0}); }

std::int64_t TokenBatch::predicted_tokens() const {
  std::int64_t n = 0;
  for (int len : lengths) n += len - 1;
  return n;
}

SyntheticData::SyntheticData(std::uint64_t seed, int vocab, int seq_len, Lengths lengths, const std::string& kind,
                             int markov_states)
    : seed_(seed), vocab_(vocab), seq_len_(seq_len), lengths_(lengths), markov_(kind == "markov") {
  if (!markov_) return;
  const int states = std::max(1, std::min(markov_states, vocab - 1));
  active_.reserve(static_cast<std::size_t>(states));
  for (int i = 0; i < states; ++i)
    active_.push_back(1 + static_cast<std::int64_t>(key(seed_, 0x4D41524B, static_cast<std::uint64_t>(i), 0) %
                                                   static_cast<std::uint64_t>(vocab_ - 1)));
}

std::uint64_t SyntheticData::successor(std::int64_t token, std::uint64_t choice) const {
  return key(seed_, 0x53554343, static_cast<std::uint64_t>(token), choice) % active_.size();
}

int SyntheticData::length_of(int step, std::int64_t row) const {
  if (!lengths_.uniform) return seq_len_;
  const auto span = static_cast<std::uint64_t>(lengths_.max - lengths_.min + 1);
  return lengths_.min + static_cast<int>(key(seed_, 0x4C454E, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(row)) % span);
}

std::int64_t SyntheticData::token_at(int step, std::int64_t row, int position) const {
  // Token ids 1..vocab-1: 0 is the padding id.
  const auto h = key(seed_, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(row), static_cast<std::uint64_t>(position));
  return 1 + static_cast<std::int64_t>(h % static_cast<std::uint64_t>(vocab_ - 1));
}

TokenBatch SyntheticData::rows(int step, std::int64_t first, int count) const {
  TokenBatch b = TokenBatch::padded(count, seq_len_);
  for (int r = 0; r < count; ++r) {
    const std::int64_t row = first + r;
    const int len = length_of(step, row);
    b.lengths[r] = len;
    std::int64_t prev = 0;
    for (int t = 0; t < len; ++t) {
      std::int64_t tok = token_at(step, row, t);
      if (markov_) {
        const auto draw = key(seed_, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(row), static_cast<std::uint64_t>(t));
        tok = t == 0 ? active_[draw % active_.size()] : active_[successor(prev, draw % kMarkovSuccessors)];
      }
      prev = tok;
      b.tokens[static_cast<std::size_t>(r) * seq_len_ + t] = tok;
      b.labels[static_cast<std::size_t>(r) * seq_len_ + t] = tok;
    }
  }
  return b;
}

TokenBatch SyntheticData::micro_batch(int step, int rank, int micro, int grad_accum, int micro_batch) const {
  const std::int64_t first = (static_cast<std::int64_t>(rank) * grad_accum + micro) * micro_batch;
  return rows(step, first, micro_batch);
}

}  // namespace ddpbench::train
