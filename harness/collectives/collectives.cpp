#include "collectives/collectives.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <regex>
#include <tuple>

#include "common/error.h"
#include "common/strings.h"
#include "results/results.h"
#include "results/stats.h"

namespace ddpbench::collectives {

double Pattern::value(int rank, std::int64_t i) const {
  const std::int64_t residue = (i + static_cast<std::int64_t>(rank_stride) * rank) % modulus;
  return window > 0 ? (residue < window ? 1.0 : 0.0) : static_cast<double>(residue);
}

namespace {

// The period of value(rank, shift + t) over t, one modulus long.
std::vector<double> period_of(const Pattern& p, int rank, std::int64_t shift) {
  std::vector<double> v(static_cast<std::size_t>(p.modulus));
  for (int t = 0; t < p.modulus; ++t) v[static_cast<std::size_t>(t)] = p.value(rank, shift + t);
  return v;
}

std::vector<double> summed_period(const Pattern& p, int world, std::int64_t shift) {
  std::vector<double> sum(static_cast<std::size_t>(p.modulus), 0.0);
  for (int r = 0; r < world; ++r) {
    const auto v = period_of(p, r, shift);
    for (std::size_t t = 0; t < v.size(); ++t) sum[t] += v[t];
  }
  return sum;
}

double all_reduce_factor(int n) { return 2.0 * (n - 1) / n; }
double scatter_gather_factor(int n) { return static_cast<double>(n - 1) / n; }
double one(int) { return 1.0; }
// nccl-tests' factor is 1 at any rank count, but a broadcast on one rank moves nothing, and its
// algbw (size over a no-op's time) would read as tens of TB/s: 0 there, as for the other collectives.
double broadcast_factor(int n) { return n > 1 ? 1.0 : 0.0; }

Layout whole(std::int64_t bytes, int element_bytes, int, int) {
  Layout l;
  l.count = bytes / element_bytes;
  l.send = l.recv = l.count;
  l.bytes = l.count * element_bytes;
  return l;
}

// nccl-tests: the size is the total array, each rank's share count / ranks.
Layout split_layout(std::int64_t bytes, int element_bytes, int world, int rank, bool gather) {
  Layout l;
  const std::int64_t per_rank = bytes / element_bytes / world;
  l.count = per_rank * world;
  l.bytes = l.count * element_bytes;
  l.send = gather ? per_rank : l.count;
  l.recv = gather ? l.count : per_rank;
  l.in_place_offset = per_rank * rank;
  return l;
}
Layout reduce_scatter_layout(std::int64_t b, int e, int w, int r) { return split_layout(b, e, w, r, false); }
Layout all_gather_layout(std::int64_t b, int e, int w, int r) { return split_layout(b, e, w, r, true); }

std::vector<Stretch> all_reduce_expected(const Pattern& p, const Layout& l, int, int world) {
  return {{0, l.recv, summed_period(p, world, 0)}};
}
std::vector<Stretch> reduce_scatter_expected(const Pattern& p, const Layout& l, int rank, int world) {
  return {{0, l.recv, summed_period(p, world, l.recv * rank)}};
}
std::vector<Stretch> all_gather_expected(const Pattern& p, const Layout& l, int, int world) {
  std::vector<Stretch> out;
  for (int r = 0; r < world; ++r) out.push_back({l.send * r, l.send, period_of(p, r, 0)});
  return out;
}
std::vector<Stretch> broadcast_expected(const Pattern& p, const Layout& l, int, int) {
  return {{0, l.recv, period_of(p, 0, 0)}};  // root 0
}
std::vector<Stretch> copy_expected(const Pattern& p, const Layout& l, int rank, int) { return {{0, l.recv, period_of(p, rank, 0)}}; }

// Sums use 0/1 values so that they stay exact in bf16; the moves use all residues, which tell more
// elements apart. 257 is prime, so no power-of-two block size is a whole number of periods.
constexpr Pattern kSums{257, 1, 128};
constexpr Pattern kMoves{257, 17, 0};

const Collective kTable[] = {
    {"all_reduce", all_reduce_factor, whole, all_reduce_expected, kSums, true, false},
    {"reduce_scatter", scatter_gather_factor, reduce_scatter_layout, reduce_scatter_expected, kSums, true, true},
    {"all_gather", scatter_gather_factor, all_gather_layout, all_gather_expected, kMoves, true, true},
    {"broadcast", broadcast_factor, whole, broadcast_expected, kMoves, true, false},
    // Not a collective: the device copy bandwidth, the baseline of a single rank (out of place).
    {"copy", one, whole, copy_expected, kMoves, false, true},
};

}  // namespace

std::span<const Collective> table() { return kTable; }

const Collective& find(std::string_view name) {
  std::string known;
  for (const auto& c : kTable) {
    if (c.name == name) return c;
    known += (known.empty() ? "" : ", ") + std::string(c.name);
  }
  throw UsageError("unknown collective '" + std::string(name) + "' (" + known + ")");
}

std::vector<Stretch> send_contents(const Collective& c, const Layout& l, int rank) {
  return {{0, l.send, period_of(c.pattern, rank, 0)}};
}

Bandwidth bandwidth(const Collective& c, double bytes, double seconds, int world) {
  Bandwidth b;
  if (seconds <= 0) return b;
  b.algbw = bytes / seconds;
  b.busbw = b.algbw * c.bus_factor(world);
  return b;
}

std::vector<std::int64_t> sizes(std::int64_t min_bytes, std::int64_t max_bytes) {
  if (min_bytes < 1) throw UsageError("--min-bytes: must be at least 1");
  if (max_bytes < min_bytes) throw UsageError("--max-bytes: " + std::to_string(max_bytes) + " is below the smallest size " + std::to_string(min_bytes));
  std::vector<std::int64_t> out;
  for (std::int64_t b = min_bytes; b <= max_bytes; b *= 2) out.push_back(b);
  return out;
}

int element_bytes(std::string_view dtype) {
  if (dtype == "bf16") return 2;
  if (dtype == "fp32") return 4;
  throw UsageError("unknown dtype '" + std::string(dtype) + "' (bf16, fp32)");
}

std::string benchmark_name(std::string_view collective, std::string_view dtype, std::string_view mode, std::int64_t bytes) {
  return std::string(collective) + "/" + std::string(dtype) + "/" + std::string(mode) + "/" + std::to_string(bytes);
}

double gbench_seconds(const nlohmann::json& entry) {
  const std::string unit = entry.value("time_unit", "ns");
  const double scale = unit == "s" ? 1.0 : unit == "ms" ? 1e-3 : unit == "us" ? 1e-6 : 1e-9;
  return entry.at("real_time").get<double>() * scale;
}

nlohmann::json parse_gbench_json(const std::string& text, const std::string& where) {
  // Only values are rewritten: a bare word after ':' outside any string.
  static const std::regex non_finite(R"((:\s*)-?(nan|inf)\b)", std::regex::icase);
  try {
    return nlohmann::json::parse(std::regex_replace(text, non_finite, "$1null"));
  } catch (const nlohmann::json::exception& e) {
    throw RunError(where + ": " + e.what());
  }
}

std::vector<Series> series_from_gbench(const nlohmann::json& gbench, int world) {
  if (!gbench.contains("benchmarks") || !gbench["benchmarks"].is_array())
    throw RunError("benchmark output has no 'benchmarks' list");
  struct Samples {
    std::vector<double> times;
    std::int64_t wrong = 0, count = 0;
  };
  std::map<std::tuple<std::string, std::string, std::string>, std::map<std::int64_t, Samples>> grouped;
  for (const auto& e : gbench["benchmarks"]) {
    if (e.value("run_type", "iteration") != "iteration" || e.value("error_occurred", false)) continue;
    // run_name drops the /iterations:, /repeats: and /manual_time suffixes of `name`.
    const auto parts = split(e.value("run_name", e.at("name").get<std::string>()), '/');
    if (parts.size() < 4) continue;
    const auto bytes = parse_int(parts[3]);
    if (!bytes) continue;
    auto& s = grouped[{parts[0], parts[1], parts[2]}][*bytes];
    s.times.push_back(gbench_seconds(e));
    s.wrong = std::max(s.wrong, static_cast<std::int64_t>(std::llround(e.value("wrong", 0.0))));
    s.count = static_cast<std::int64_t>(std::llround(e.value("count", 0.0)));
  }
  std::vector<Series> out;
  for (auto& [key, by_size] : grouped) {
    Series s{std::get<0>(key), std::get<1>(key), std::get<2>(key), {}};
    const auto& c = find(s.collective);
    for (auto& [bytes, samples] : by_size) {
      Row r;
      r.bytes = bytes;
      r.count = samples.count;
      r.repetitions = static_cast<int>(samples.times.size());
      r.time_s = results::median(samples.times);
      r.time_min_s = *std::min_element(samples.times.begin(), samples.times.end());
      r.time_max_s = *std::max_element(samples.times.begin(), samples.times.end());
      const auto bw = bandwidth(c, static_cast<double>(bytes), r.time_s, world);
      r.algbw = bw.algbw;
      r.busbw = bw.busbw;
      r.wrong = samples.wrong;
      s.rows.push_back(r);
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::string series_file_name(const Series& s) { return s.collective + "-" + s.dtype + "-" + s.mode + ".json"; }

nlohmann::json series_document(const Series& s, const RunInfo& info) {
  const int world = info.nproc * info.nnodes;
  nlohmann::json config = {{"collective", s.collective}, {"dtype", s.dtype},         {"mode", s.mode},
                           {"nproc", info.nproc},         {"nnodes", info.nnodes},    {"device", info.device},
                           {"backend", info.backend},     {"max_bytes", info.max_bytes}, {"repetitions", info.repetitions},
                           {"batch", info.batch}};
  const std::string cell = "collectives/" + s.collective + "/" + s.dtype + "/" + s.mode + "/n" + std::to_string(world);
  auto doc = results::benchmark_document_head("collectives", cell, config, info.run_id, info.fingerprint, info.hardware_key);

  nlohmann::json rows = nlohmann::json::array();
  std::int64_t wrong = 0;
  double busbw_max = 0, busbw_sum = 0;
  for (const auto& r : s.rows) {
    rows.push_back({{"bytes", r.bytes},
                    {"count", r.count},
                    {"repetitions", r.repetitions},
                    {"time_s", r.time_s},
                    {"time_min_s", r.time_min_s},
                    {"time_max_s", r.time_max_s},
                    {"algbw_GBps", r.algbw / 1e9},
                    {"busbw_GBps", r.busbw / 1e9},
                    {"wrong", r.wrong}});
    wrong += r.wrong;
    busbw_max = std::max(busbw_max, r.busbw);
    busbw_sum += r.busbw;
  }
  doc["rows"] = rows;
  doc["status"] = wrong == 0 ? nlohmann::json{{"state", "ok"}}
                             : nlohmann::json{{"state", "failed"}, {"phase", "check"}, {"rank", -1},
                                              {"reason", std::to_string(wrong) + " wrong element(s) in the data check"}};
  doc["steps"] = nlohmann::json::array();
  nlohmann::json ranks = nlohmann::json::array();
  for (int r = 0; r < world; ++r)
    ranks.push_back({{"rank", r}, {"device", info.device == "cuda" ? "cuda:" + std::to_string(r % info.nproc) : "cpu"}});
  doc["ranks"] = ranks;
  nlohmann::json summary = {{"sizes", s.rows.size()}, {"wrong_elements", wrong}};
  if (!s.rows.empty()) {
    summary["busbw_max_GBps"] = busbw_max / 1e9;
    summary["busbw_avg_GBps"] = busbw_sum / static_cast<double>(s.rows.size()) / 1e9;
    summary["busbw_largest_GBps"] = s.rows.back().busbw / 1e9;
    summary["algbw_largest_GBps"] = s.rows.back().algbw / 1e9;
    summary["largest_bytes"] = s.rows.back().bytes;
    summary["time_smallest_s"] = s.rows.front().time_s;
  }
  doc["summary"] = summary;
  return doc;
}

}  // namespace ddpbench::collectives
