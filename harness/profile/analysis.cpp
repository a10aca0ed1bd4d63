#include "profile/analysis.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <regex>
#include <set>
#include <sstream>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/error.h"
#include "common/strings.h"
#include "results/stats.h"

namespace ddpbench::profile {

namespace {

using nlohmann::json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Span {
  std::uint64_t start = 0, end = 0;
};

// A record whose end precedes its start (a clock hiccup, a range never closed) covers nothing.
Span span_of(std::uint64_t start, std::uint64_t end) { return {start, std::max(start, end)}; }

bool is_communication(const std::string& kernel_name) { return kernel_name.starts_with("nccl"); }

// Disjoint spans in order, with running sums: the covered length inside any window costs two binary
// searches, which keeps the per-step work independent of the trace's size.
class Coverage {
 public:
  Coverage() = default;

  // Spans in any order, overlapping or not; empty ones are dropped, touching ones merged (so a gap
  // between them is never zero-length).
  explicit Coverage(std::vector<Span> spans) {
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.start < b.start; });
    for (const Span& s : spans) {
      if (s.end <= s.start) continue;
      if (!spans_.empty() && s.start <= spans_.back().end)
        spans_.back().end = std::max(spans_.back().end, s.end);
      else
        spans_.push_back(s);
    }
    index();
  }

  static Coverage unite(const Coverage& a, const Coverage& b) {
    std::vector<Span> all(a.spans_);
    all.insert(all.end(), b.spans_.begin(), b.spans_.end());
    return Coverage(std::move(all));
  }

  // a \ b, by one walk over both.
  static Coverage subtract(const Coverage& a, const Coverage& b) {
    Coverage out;
    std::size_t j = 0;
    for (const Span& s : a.spans_) {
      std::uint64_t cur = s.start;
      while (j < b.spans_.size() && b.spans_[j].end <= cur) ++j;
      std::size_t k = j;
      while (k < b.spans_.size() && b.spans_[k].start < s.end) {
        if (b.spans_[k].start > cur) out.spans_.push_back({cur, b.spans_[k].start});
        cur = std::max(cur, b.spans_[k].end);
        if (cur >= s.end) break;
        ++k;  // b.spans_[k] ends inside s, so it cannot reach the next span of a
      }
      if (cur < s.end) out.spans_.push_back({cur, s.end});
      j = k;
    }
    out.index();
    return out;
  }

  std::uint64_t measure(std::uint64_t s, std::uint64_t e) const {
    if (e <= s) return 0;
    const std::size_t i = first_ending_after(s);
    const auto j = static_cast<std::size_t>(
        std::lower_bound(spans_.begin(), spans_.end(), e, [](const Span& x, std::uint64_t t) { return x.start < t; }) -
        spans_.begin());
    if (i >= j) return 0;
    std::uint64_t total = prefix_[j] - prefix_[i];
    if (spans_[i].start < s) total -= s - spans_[i].start;
    if (spans_[j - 1].end > e) total -= spans_[j - 1].end - e;
    return total;
  }

  bool contains(std::uint64_t t) const {
    const std::size_t i = first_ending_after(t);
    return i < spans_.size() && spans_[i].start <= t;
  }

  std::size_t first_ending_after(std::uint64_t t) const {
    return static_cast<std::size_t>(
        std::upper_bound(spans_.begin(), spans_.end(), t, [](std::uint64_t x, const Span& s) { return x < s.end; }) -
        spans_.begin());
  }

  const std::vector<Span>& spans() const { return spans_; }

 private:
  void index() {
    prefix_.assign(spans_.size() + 1, 0);
    for (std::size_t i = 0; i < spans_.size(); ++i) prefix_[i + 1] = prefix_[i] + (spans_[i].end - spans_[i].start);
  }

  std::vector<Span> spans_;
  std::vector<std::uint64_t> prefix_{0};
};

// Matches range names against the marker; each distinct name is tested once, since a regex over
// 10^5 ranges that share a handful of names would otherwise dominate.
class MarkerMatcher {
 public:
  explicit MarkerMatcher(const std::string& marker) : marker_(marker) {
    if (marker.empty()) throw UsageError("the step marker is empty");
    if (marker.starts_with("re:")) {
      try {
        regex_.emplace(marker.substr(3));
      } catch (const std::regex_error& e) {
        throw UsageError("invalid step marker regex '" + marker.substr(3) + "': " + e.what());
      }
    }
  }

  bool operator()(const std::string& name) {
    if (!regex_) return name == marker_;
    auto it = seen_.find(name);
    if (it == seen_.end()) it = seen_.emplace(name, std::regex_search(name, *regex_)).first;
    return it->second;
  }

 private:
  std::string marker_;
  std::optional<std::regex> regex_;
  std::unordered_map<std::string, bool> seen_;
};

json num(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

template <typename T>
json quantities_json(const StepQuantities<T>& q) {
  json j = json::object();
  for_each_quantity(q, [&](const char* name, const T& v) {
    if constexpr (std::is_floating_point_v<T>)
      j[name] = num(v);
    else
      j[name] = v;
  });
  return j;
}

template <typename M>
json phases_json(const M& phases) {
  json j = json::object();
  for (const auto& [name, v] : phases) {
    if constexpr (std::is_floating_point_v<std::decay_t<decltype(v)>>)
      j[name] = num(v);
    else
      j[name] = v;
  }
  return j;
}

// Top kernels on the screen; the JSON holds AnalysisOptions::top_n.
constexpr std::size_t kTopKernelsShown = 15;

std::string ms(double ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", ns / 1e6);
  return buf;
}

std::string pct(double fraction) {
  if (!std::isfinite(fraction)) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", fraction * 100.0);
  return buf;
}

}  // namespace

std::vector<std::size_t> step_ranges(const RankActivity& activity, const std::string& marker) {
  MarkerMatcher matches(marker);
  std::vector<std::size_t> steps;
  for (std::size_t i = 0; i < activity.ranges.size(); ++i)
    if (matches(activity.ranges[i].name)) steps.push_back(i);
  std::stable_sort(steps.begin(), steps.end(), [&](std::size_t a, std::size_t b) {
    const Span x = span_of(activity.ranges[a].start, activity.ranges[a].end);
    const Span y = span_of(activity.ranges[b].start, activity.ranges[b].end);
    return x.start != y.start ? x.start < y.start : x.end < y.end;
  });
  return steps;
}

std::vector<Window> step_windows(const RankActivity& activity, const std::string& marker) {
  std::vector<Window> windows;
  for (std::size_t i : step_ranges(activity, marker)) {
    const RangeRecord& r = activity.ranges[i];
    const Span s = span_of(r.start, r.end);
    windows.push_back({s.start, s.end, r.name});
  }
  if (windows.empty() && !activity.ranges.empty()) {
    std::set<std::string> names;
    for (const auto& r : activity.ranges) names.insert(r.name);
    std::string seen;
    int shown = 0;
    for (const auto& n : names) {
      if (shown++ == 8) {
        seen += ", ...";
        break;
      }
      seen += (seen.empty() ? "'" : ", '") + n + "'";
    }
    throw UsageError("no range matches the step marker '" + marker + "' (ranges seen: " + seen + ")");
  }
  if (windows.empty()) {
    std::uint64_t lo = std::numeric_limits<std::uint64_t>::max(), hi = 0;
    bool any = false;
    auto take = [&](std::uint64_t s, std::uint64_t e) {
      const Span x = span_of(s, e);
      lo = std::min(lo, x.start);
      hi = std::max(hi, x.end);
      any = true;
    };
    for (const auto& k : activity.kernels) take(k.start, k.end);
    for (const auto& m : activity.memcpys) take(m.start, m.end);
    for (const auto& m : activity.memsets) take(m.start, m.end);
    if (any) windows.push_back({lo, hi, ""});
  }
  return windows;
}

std::string short_kernel_name(const std::string& name) {
  std::string_view n = name;
  if (n.starts_with("void ")) n.remove_prefix(5);
  // The parameter list: the last parenthesised group, when it closes the name. Parentheses inside
  // it (function types, lambdas in template arguments) are balanced, so counting finds its start.
  if (n.ends_with(")")) {
    int depth = 0;
    for (std::size_t i = n.size(); i-- > 0;) {
      if (n[i] == ')') ++depth;
      else if (n[i] == '(' && --depth == 0) {
        if (i > 0) n = n.substr(0, i);
        break;
      }
    }
  }
  std::string out(n);
  static constexpr std::string_view kAnonymous = "(anonymous namespace)::";
  for (std::size_t at; (at = out.find(kAnonymous)) != std::string::npos;) out.erase(at, kAnonymous.size());
  return out;
}

LaunchCoverage launch_coverage(const RankActivity& activity) {
  LaunchCoverage c;
  c.api_calls = activity.api_calls.size();
  c.device_events = activity.kernels.size() + activity.memcpys.size() + activity.memsets.size();
  if (c.api_calls == 0) return c;
  std::unordered_set<std::uint32_t> launched;
  for (const auto& call : activity.api_calls) launched.insert(call.correlation);
  std::map<std::string, std::uint64_t> missing;
  auto check = [&](std::uint32_t correlation, const std::string& name) {
    if (launched.count(correlation)) return;
    ++c.without_launch;
    ++missing[name];
  };
  for (const auto& k : activity.kernels) check(k.correlation, k.name);
  for (const auto& m : activity.memcpys) check(m.correlation, m.kind.empty() ? "Memcpy" : "Memcpy " + m.kind);
  for (const auto& m : activity.memsets) check(m.correlation, "Memset");
  std::vector<std::pair<std::string, std::uint64_t>> ranked(missing.begin(), missing.end());
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto& x, const auto& y) { return x.second > y.second; });
  if (ranked.size() > 5) ranked.resize(5);
  c.most_common_without_launch = std::move(ranked);
  return c;
}

RankBreakdown analyze(const RankActivity& activity, const AnalysisOptions& options) {
  if (options.warmup < 0) throw UsageError("warmup must not be negative");
  if (options.top_n < 0) throw UsageError("the number of top kernels must not be negative");

  RankBreakdown b;
  b.rank = activity.rank;
  b.world_size = activity.world_size;
  b.device_name = activity.device_name;
  b.step_marker = options.step_marker;
  b.steps_from_ranges = !activity.ranges.empty();
  b.warmup = options.warmup;
  b.gap_threshold_ns = options.gap_threshold_ns;
  b.dropped_records = activity.dropped_records;

  const std::vector<Window> windows = step_windows(activity, options.step_marker);

  std::vector<Span> compute_spans, comm_spans, memop_spans;
  std::vector<std::uint64_t> kernel_starts;
  kernel_starts.reserve(activity.kernels.size());
  for (const auto& k : activity.kernels) {
    (is_communication(k.name) ? comm_spans : compute_spans).push_back(span_of(k.start, k.end));
    kernel_starts.push_back(k.start);
  }
  std::sort(kernel_starts.begin(), kernel_starts.end());
  std::vector<Span> collectives;  // communication kernels by start, for collective_ns
  for (const auto& k : activity.kernels)
    if (is_communication(k.name)) collectives.push_back(span_of(k.start, k.end));
  std::sort(collectives.begin(), collectives.end(),
            [](const Span& x, const Span& y) { return x.start != y.start ? x.start < y.start : x.end < y.end; });
  for (const auto& m : activity.memcpys) memop_spans.push_back(span_of(m.start, m.end));
  for (const auto& m : activity.memsets) memop_spans.push_back(span_of(m.start, m.end));

  const Coverage compute(std::move(compute_spans));
  const Coverage comm(std::move(comm_spans));
  const Coverage memops(std::move(memop_spans));
  const Coverage kernels_union = Coverage::unite(compute, comm);
  const Coverage busy = Coverage::unite(kernels_union, memops);
  const Coverage exposed = Coverage::subtract(comm, compute);

  std::map<std::string, Coverage> phases;
  {
    std::map<std::string, std::vector<Span>> by_name;
    for (const char* p : kPhaseNames) by_name[p];
    for (const auto& r : activity.ranges) {
      auto it = by_name.find(r.name);
      if (it != by_name.end()) it->second.push_back(span_of(r.start, r.end));
    }
    for (auto& [name, spans] : by_name) phases.emplace(name, Coverage(std::move(spans)));
  }

  std::vector<Span> measured_windows;
  for (std::size_t i = 0; i < windows.size(); ++i) {
    const Window& w = windows[i];
    const std::uint64_t s = w.start, e = w.end;
    StepBreakdown st;
    st.index = static_cast<int>(i);
    st.warmup = static_cast<int>(i) < options.warmup;
    st.name = w.name;
    st.start = s;
    st.end = e;
    st.step_ns = e - s;
    st.busy_ns = busy.measure(s, e);
    st.compute_ns = compute.measure(s, e);
    st.comm_ns = comm.measure(s, e);
    st.exposed_comm_ns = exposed.measure(s, e);
    st.overlapped_comm_ns = st.comm_ns - st.exposed_comm_ns;
    st.other_ns = st.busy_ns - kernels_union.measure(s, e);
    st.memory_ops_ns = memops.measure(s, e);
    st.idle_ns = st.step_ns - st.busy_ns;
    st.overlap = st.comm_ns > 0 ? static_cast<double>(st.overlapped_comm_ns) / static_cast<double>(st.comm_ns) : kNaN;
    st.kernels = static_cast<std::uint64_t>(std::lower_bound(kernel_starts.begin(), kernel_starts.end(), e) -
                                            std::lower_bound(kernel_starts.begin(), kernel_starts.end(), s));

    // The idle stretches: from the window's start to the first busy span, between spans, and from the
    // last one to the window's end (the host preparing the step counts as host-bound too).
    if (e > s) {
      std::uint64_t cursor = s;
      auto gap_to = [&](std::uint64_t t) {
        if (t <= cursor) return;
        if (t - cursor > options.gap_threshold_ns) {
          ++st.host_gaps;
          st.host_gap_ns += t - cursor;
        } else {
          ++st.launch_gaps;
        }
      };
      const auto& bs = busy.spans();
      for (std::size_t k = busy.first_ending_after(s); k < bs.size() && bs[k].start < e; ++k) {
        gap_to(std::max(bs[k].start, s));
        cursor = std::min(bs[k].end, e);
      }
      gap_to(e);
    }
    for (const auto& [name, cov] : phases) st.phases_ns[name] = cov.measure(s, e);
    for (auto c = std::lower_bound(collectives.begin(), collectives.end(), s,
                                   [](const Span& x, std::uint64_t t) { return x.start < t; });
         c != collectives.end() && c->start < e; ++c)
      st.collective_ns.push_back(c->end - c->start);
    if (!st.warmup) measured_windows.push_back({s, e});
    b.steps.push_back(std::move(st));
  }

  // Summary over measured steps.
  StepSummary& sum = b.summary;
  sum.warmup_steps = std::min<int>(options.warmup, static_cast<int>(windows.size()));
  std::vector<const StepBreakdown*> measured;
  for (const auto& st : b.steps)
    if (!st.warmup) measured.push_back(&st);
  sum.measured_steps = static_cast<int>(measured.size());
  {
    // Medians and totals quantity by quantity, in for_each_quantity's order, so that the per-step,
    // median and total layouts cannot drift apart.
    std::vector<std::vector<double>> columns;
    for (const StepBreakdown* st : measured) {
      std::vector<std::uint64_t> values;
      for_each_quantity(*st, [&](const char*, const std::uint64_t& v) { values.push_back(v); });
      columns.resize(values.size());
      std::size_t c = 0;
      for_each_quantity(sum.total, [&](const char*, std::uint64_t& v) {
        v += values[c];
        columns[c].push_back(static_cast<double>(values[c]));
        ++c;
      });
    }
    std::size_t c = 0;
    for_each_quantity(sum.median, [&](const char*, double& v) {
      v = c < columns.size() ? results::median(columns[c]) : kNaN;
      ++c;
    });
    std::vector<double> step_times;
    for (const StepBreakdown* st : measured) step_times.push_back(static_cast<double>(st->step_ns));
    sum.step_ns_mean = results::mean(step_times);
    sum.step_ns_p90 = results::percentile(step_times, 90.0);
    std::vector<double> overlaps;
    for (const StepBreakdown* st : measured)
      if (st->comm_ns > 0) overlaps.push_back(st->overlap);
    sum.median_overlap = results::median(overlaps);
    for (const char* p : kPhaseNames) {
      std::vector<double> v;
      std::uint64_t total = 0;
      for (const StepBreakdown* st : measured) {
        const std::uint64_t x = st->phases_ns.at(p);
        v.push_back(static_cast<double>(x));
        total += x;
      }
      sum.median_phases_ns[p] = results::median(v);
      sum.total_phases_ns[p] = total;
    }
  }
  const auto& t = sum.total;
  if (t.step_ns > 0) {
    const double step = static_cast<double>(t.step_ns);
    sum.compute_fraction = static_cast<double>(t.compute_ns) / step;
    sum.exposed_comm_fraction = static_cast<double>(t.exposed_comm_ns) / step;
    sum.other_fraction = static_cast<double>(t.other_ns) / step;
    sum.idle_fraction = static_cast<double>(t.idle_ns) / step;
    sum.busy_fraction = static_cast<double>(t.busy_ns) / step;
  }
  if (t.comm_ns > 0) sum.overlap = static_cast<double>(t.overlapped_comm_ns) / static_cast<double>(t.comm_ns);

  // Top kernels, clipped to the union of the measured steps.
  const Coverage measured_cov(std::move(measured_windows));
  struct Agg {
    std::uint64_t count = 0, total = 0;
  };
  std::unordered_map<std::string_view, Agg> by_kernel;
  for (const auto& k : activity.kernels) {
    const Span x = span_of(k.start, k.end);
    const std::uint64_t len = measured_cov.measure(x.start, x.end);
    if (len == 0 && !measured_cov.contains(x.start)) continue;
    Agg& a = by_kernel[k.name];
    ++a.count;
    a.total += len;
  }
  KernelTime& kt = b.kernel_time;
  kt.distinct = by_kernel.size();
  for (const auto& [name, a] : by_kernel) {
    kt.total_ns += a.total;
    kt.launches += a.count;
  }
  const double steps = sum.measured_steps;
  std::vector<KernelStat> stats;
  stats.reserve(by_kernel.size());
  for (const auto& [name, a] : by_kernel) {
    KernelStat k;
    k.name = std::string(name);
    k.count = a.count;
    k.total_ns = a.total;
    k.count_per_step = static_cast<double>(a.count) / steps;  // steps > 0: a kernel counted means a measured step
    k.ns_per_step = static_cast<double>(a.total) / steps;
    k.share = kt.total_ns > 0 ? static_cast<double>(a.total) / static_cast<double>(kt.total_ns) : 0.0;
    stats.push_back(std::move(k));
  }
  std::sort(stats.begin(), stats.end(), [](const KernelStat& x, const KernelStat& y) {
    if (x.total_ns != y.total_ns) return x.total_ns > y.total_ns;
    if (x.count != y.count) return x.count > y.count;
    return x.name < y.name;
  });
  if (stats.size() > static_cast<std::size_t>(options.top_n)) stats.resize(static_cast<std::size_t>(options.top_n));
  for (KernelStat& k : stats) k.short_name = short_kernel_name(k.name);  // the few shown, not every kernel
  b.top_kernels = std::move(stats);
  b.launches = launch_coverage(activity);

  // Memory: the running sum per device in time order; records with one timestamp keep the order the
  // collector delivered them in, which is the order CUPTI saw them.
  std::map<std::pair<std::uint32_t, std::string>, std::vector<const MemoryRecord*>> by_device;
  for (const auto& m : activity.memory) by_device[{m.device, m.kind}].push_back(&m);
  for (auto& [key, records] : by_device) {
    std::stable_sort(records.begin(), records.end(),
                     [](const MemoryRecord* x, const MemoryRecord* y) { return x->timestamp < y->timestamp; });
    MemoryPeak p;
    p.device = key.first;
    p.kind = key.second;
    std::int64_t running = 0;
    for (const MemoryRecord* m : records) {
      const auto bytes = static_cast<std::int64_t>(m->bytes);
      if (m->allocation) {
        running += bytes;
        ++p.allocations;
      } else {
        running -= bytes;
        ++p.releases;
      }
      if (running > p.peak_bytes) {
        p.peak_bytes = running;
        p.peak_at = m->timestamp;
      }
    }
    p.final_bytes = running;
    if (p.peak_at) {
      for (std::size_t i = 0; i < windows.size(); ++i)
        if (windows[i].start <= *p.peak_at && *p.peak_at < windows[i].end) {
          p.peak_step = static_cast<int>(i);
          break;
        }
    }
    b.memory.push_back(p);
  }
  return b;
}

json to_json(const RankBreakdown& b) {
  json steps = json::array();
  for (const auto& st : b.steps) {
    json j = {{"index", st.index}, {"warmup", st.warmup}, {"name", st.name}, {"start", st.start}, {"end", st.end}};
    j.update(quantities_json<std::uint64_t>(st));
    j["overlap"] = num(st.overlap);
    j["phases_ns"] = phases_json(st.phases_ns);
    j["collectives"] = st.collective_ns.size();
    steps.push_back(std::move(j));
  }
  const StepSummary& s = b.summary;
  json median = quantities_json(s.median);
  median["overlap"] = num(s.median_overlap);
  median["phases_ns"] = phases_json(s.median_phases_ns);
  json total = quantities_json(s.total);
  total["phases_ns"] = phases_json(s.total_phases_ns);
  json summary = {{"measured_steps", s.measured_steps},
                  {"warmup_steps", s.warmup_steps},
                  {"median", std::move(median)},
                  {"total", std::move(total)},
                  {"step_ns_mean", num(s.step_ns_mean)},
                  {"step_ns_p90", num(s.step_ns_p90)},
                  {"fractions",
                   {{"compute", num(s.compute_fraction)},
                    {"exposed_comm", num(s.exposed_comm_fraction)},
                    {"other", num(s.other_fraction)},
                    {"idle", num(s.idle_fraction)},
                    {"busy", num(s.busy_fraction)}}},
                  {"overlap", num(s.overlap)}};
  json top = json::array();
  for (const auto& k : b.top_kernels)
    top.push_back({{"name", k.name},
                   {"short_name", k.short_name},
                   {"count", k.count},
                   {"count_per_step", num(k.count_per_step)},
                   {"total_ns", k.total_ns},
                   {"ns_per_step", num(k.ns_per_step)},
                   {"share", num(k.share)}});
  json kernel_time = {{"total_ns", b.kernel_time.total_ns},
                      {"launches", b.kernel_time.launches},
                      {"distinct", b.kernel_time.distinct}};
  json unlaunched = json::array();
  for (const auto& [name, n] : b.launches.most_common_without_launch) unlaunched.push_back({{"name", name}, {"count", n}});
  json launches = {{"api_calls", b.launches.api_calls},
                   {"device_events", b.launches.device_events},
                   {"without_launch", b.launches.without_launch},
                   {"most_common_without_launch", std::move(unlaunched)}};
  json memory = json::array();
  for (const auto& m : b.memory)
    memory.push_back({{"device", m.device},
                      {"kind", m.kind},
                      {"peak_bytes", m.peak_bytes},
                      {"peak_at", m.peak_at ? json(*m.peak_at) : json(nullptr)},
                      {"peak_step", m.peak_step >= 0 ? json(m.peak_step) : json(nullptr)},
                      {"final_bytes", m.final_bytes},
                      {"allocations", m.allocations},
                      {"releases", m.releases}});
  return {{"rank", b.rank},
          {"world_size", b.world_size},
          {"device_name", b.device_name},
          {"step_marker", b.step_marker},
          {"steps_from_ranges", b.steps_from_ranges},
          {"warmup", b.warmup},
          {"gap_threshold_ns", b.gap_threshold_ns},
          {"dropped_records", b.dropped_records},
          {"summary", std::move(summary)},
          {"steps", std::move(steps)},
          {"kernel_time", std::move(kernel_time)},
          {"top_kernels", std::move(top)},
          {"launches", std::move(launches)},
          {"memory", std::move(memory)}};
}

namespace {

// See straggler_view: per measured step index in [first, common), the waits in each rank's
// collectives for the last rank to arrive.
json collective_wait(const std::vector<RankBreakdown>& ranks, std::size_t first, std::size_t common) {
  std::map<int, std::vector<double>> waits;  // by rank, one per matched step
  std::map<int, int> times_last;
  for (const auto& r : ranks) times_last[r.rank] = 0;
  json unmatched = json::array();
  std::vector<double> longest;
  int matched = 0;
  for (std::size_t i = first; i < common && !ranks.empty(); ++i) {
    const std::size_t n = ranks.front().steps[i].collective_ns.size();
    bool equal = true;
    for (const auto& r : ranks) equal = equal && r.steps[i].collective_ns.size() == n;
    if (!equal) {
      unmatched.push_back(i);
      continue;
    }
    ++matched;
    std::vector<std::uint64_t> wait(ranks.size(), 0);
    for (std::size_t c = 0; c < n; ++c) {
      std::uint64_t fastest = std::numeric_limits<std::uint64_t>::max();
      for (const auto& r : ranks) fastest = std::min(fastest, r.steps[i].collective_ns[c]);
      for (std::size_t k = 0; k < ranks.size(); ++k) wait[k] += ranks[k].steps[i].collective_ns[c] - fastest;
    }
    // The last to arrive waited least; ties go to the lower rank.
    std::size_t last = 0;
    for (std::size_t k = 1; k < ranks.size(); ++k)
      if (wait[k] < wait[last] || (wait[k] == wait[last] && ranks[k].rank < ranks[last].rank)) last = k;
    if (n > 0) ++times_last[ranks[last].rank];
    for (std::size_t k = 0; k < ranks.size(); ++k) waits[ranks[k].rank].push_back(static_cast<double>(wait[k]));
    longest.push_back(static_cast<double>(*std::max_element(wait.begin(), wait.end())));
  }
  json per_rank = json::array();
  json most = nullptr;
  int best = 0;
  for (const auto& [rank, n] : times_last) {
    const auto& w = waits[rank];
    double total = 0;
    for (double x : w) total += x;
    per_rank.push_back(
        {{"rank", rank}, {"median_wait_ns", num(results::median(w))}, {"total_wait_ns", total}, {"times_last", n}});
    if (n > best) {
      best = n;
      most = rank;
    }
  }
  return {{"matched_steps", matched},
          {"unmatched_steps", std::move(unmatched)},
          {"ranks", std::move(per_rank)},
          {"last_most_often", most},
          {"median_longest_wait_ns", num(results::median(longest))}};
}

}  // namespace

json straggler_view(const std::vector<RankBreakdown>& ranks) {
  std::set<int> seen;
  for (const auto& r : ranks)
    if (!seen.insert(r.rank).second)
      throw UsageError("rank " + std::to_string(r.rank) + " given twice to the straggler view");

  std::size_t common = ranks.empty() ? 0 : std::numeric_limits<std::size_t>::max();
  std::size_t first = 0;
  for (const auto& r : ranks) {
    common = std::min(common, r.steps.size());
    first = std::max(first, static_cast<std::size_t>(std::max(r.warmup, 0)));
  }
  json steps = json::array();
  std::vector<double> spreads;
  std::map<int, int> slowest_counts;
  for (const auto& r : ranks) slowest_counts[r.rank] = 0;
  for (std::size_t i = first; i < common; ++i) {
    const RankBreakdown* slow = nullptr;
    const RankBreakdown* fast = nullptr;
    // Ties go to the lower rank, so that the view does not depend on the order ranks were given in.
    for (const auto& r : ranks) {
      const std::uint64_t t = r.steps[i].step_ns;
      if (!slow || t > slow->steps[i].step_ns || (t == slow->steps[i].step_ns && r.rank < slow->rank)) slow = &r;
      if (!fast || t < fast->steps[i].step_ns || (t == fast->steps[i].step_ns && r.rank < fast->rank)) fast = &r;
    }
    const std::uint64_t hi = slow->steps[i].step_ns, lo = fast->steps[i].step_ns;
    steps.push_back({{"step", i},
                     {"max_ns", hi},
                     {"min_ns", lo},
                     {"spread_ns", hi - lo},
                     {"slowest_rank", slow->rank},
                     {"fastest_rank", fast->rank}});
    spreads.push_back(static_cast<double>(hi - lo));
    ++slowest_counts[slow->rank];
  }
  json rank_ids = json::array();
  for (int r : seen) rank_ids.push_back(r);
  json counts = json::array();
  json most = nullptr;
  int best = 0;
  for (const auto& [rank, n] : slowest_counts) {
    counts.push_back({{"rank", rank}, {"times_slowest", n}});
    if (n > best) {
      best = n;
      most = rank;
    }
  }
  return {{"ranks", std::move(rank_ids)},
          {"steps", std::move(steps)},
          {"median_spread_ns", num(results::median(spreads))},
          {"max_spread_ns", spreads.empty() ? json(nullptr) : json(*std::max_element(spreads.begin(), spreads.end()))},
          {"slowest_most_often", most},
          {"slowest_counts", std::move(counts)},
          {"collective_wait", collective_wait(ranks, first, common)}};
}

std::string render_straggler_view(const json& view) {
  if (!view.contains("ranks") || view["ranks"].size() < 2) return {};
  std::ostringstream out;
  const json& steps = view["steps"];
  out << "across " << view["ranks"].size() << " ranks, " << steps.size() << " measured steps: step time spread p50 "
      << ms(view["median_spread_ns"].is_null() ? kNaN : view["median_spread_ns"].get<double>()) << ", max "
      << ms(view["max_spread_ns"].is_null() ? kNaN : view["max_spread_ns"].get<double>()) << "\n";
  const json& wait = view["collective_wait"];
  const int matched = wait["matched_steps"].get<int>();
  out << "collective wait (in NCCL kernels, for the last rank to arrive), " << matched << " steps matched";
  if (!wait["unmatched_steps"].empty()) out << ", " << wait["unmatched_steps"].size() << " with unequal collectives left out";
  out << ":\n";
  char line[160];
  for (const json& r : wait["ranks"]) {
    std::snprintf(line, sizeof line, "  rank %-4d %12s/step p50   last to arrive in %d of %d steps\n", r["rank"].get<int>(),
                  ms(r["median_wait_ns"].is_null() ? kNaN : r["median_wait_ns"].get<double>()).c_str(),
                  r["times_last"].get<int>(), matched);
    out << line;
  }
  if (!wait["last_most_often"].is_null())
    out << "straggler: rank " << wait["last_most_often"].get<int>()
        << " arrives last most often; the longest wait of a peer is " << ms(wait["median_longest_wait_ns"].get<double>())
        << "/step (p50)\n";
  return out.str();
}

std::string render_breakdown(const RankBreakdown& b) {
  std::ostringstream out;
  const StepSummary& s = b.summary;
  out << "rank " << b.rank << "/" << b.world_size;
  if (!b.device_name.empty()) out << " on " << b.device_name;
  out << ": " << s.measured_steps << " steps measured";
  if (s.warmup_steps > 0) out << " (" << s.warmup_steps << " warm-up left out)";
  if (!b.steps_from_ranges) out << ", one window over all GPU activity (no ranges)";
  out << "\n";
  if (b.dropped_records > 0)
    out << "WARNING: " << b.dropped_records << " activity records dropped; the figures undercount\n";
  const LaunchCoverage& lc = b.launches;
  if (lc.without_launch > 0) {
    out << "WARNING: " << lc.without_launch << " of " << lc.device_events
        << " kernels, memcpys and memsets have no launch record (launched through an API not recorded; "
           "HTA leaves them out), most often";
    const char* sep = " ";
    for (std::size_t i = 0; i < lc.most_common_without_launch.size() && i < 3; ++i) {
      const auto& [name, n] = lc.most_common_without_launch[i];
      std::string shown = short_kernel_name(name);
      if (shown.size() > 48) shown = shown.substr(0, 45) + "...";
      out << sep << shown << " x" << n;
      sep = ", ";
    }
    out << "\n";
  }
  if (s.measured_steps == 0) {
    out << "no measured steps\n";
    return out.str();
  }
  const double n = s.measured_steps;
  auto per_step = [&](std::uint64_t total) { return static_cast<double>(total) / n; };
  char line[256];
  std::snprintf(line, sizeof line, "step time       p50 %s   mean %s   p90 %s\n", ms(s.median.step_ns).c_str(),
                ms(s.step_ns_mean).c_str(), ms(s.step_ns_p90).c_str());
  out << line;
  auto row = [&](const char* label, std::uint64_t total, double fraction, const std::string& extra = "") {
    std::snprintf(line, sizeof line, "  %-16s %12s/step %7s%s\n", label, ms(per_step(total)).c_str(),
                  pct(fraction).c_str(), extra.c_str());
    out << line;
  };
  row("compute", s.total.compute_ns, s.compute_fraction);
  row("exposed comm", s.total.exposed_comm_ns, s.exposed_comm_fraction);
  row("other (memops)", s.total.other_ns, s.other_fraction);
  char gaps[160];
  const auto short_ns = s.total.idle_ns - s.total.host_gap_ns;
  std::snprintf(gaps, sizeof gaps, "   host-bound gaps: %.1f/step, %s/step; launch gaps: %.0f/step, %s/step",
                per_step(s.total.host_gaps), ms(per_step(s.total.host_gap_ns)).c_str(), per_step(s.total.launch_gaps),
                ms(per_step(short_ns)).c_str());
  row("idle", s.total.idle_ns, s.idle_fraction, gaps);
  std::snprintf(line, sizeof line, "communication   %s/step, overlapped with compute %s\n",
                ms(per_step(s.total.comm_ns)).c_str(), pct(s.overlap).c_str());
  out << line;
  // The trainer's phases on the host's clock: on the CPU (no device activity) all the breakdown there is.
  std::string phase_list;
  for (const char* p : kPhaseNames) {
    const auto it = s.total_phases_ns.find(p);
    if (it == s.total_phases_ns.end() || it->second == 0) continue;
    phase_list += (phase_list.empty() ? "" : ", ") + std::string(p) + " " + ms(per_step(it->second));
  }
  if (!phase_list.empty()) out << "phases (host)   " << phase_list << " per step\n";
  if (!b.top_kernels.empty()) {
    const KernelTime& kt = b.kernel_time;
    std::snprintf(line, sizeof line, "top kernels     %s/step of kernel time, %.0f launches/step, %llu distinct kernels\n",
                  ms(per_step(kt.total_ns)).c_str(), per_step(kt.launches), static_cast<unsigned long long>(kt.distinct));
    out << line;
    out << "   share      ms/step   per step  kernel\n";
    for (std::size_t i = 0; i < b.top_kernels.size() && i < kTopKernelsShown; ++i) {
      const KernelStat& k = b.top_kernels[i];
      std::string name = k.short_name.empty() ? k.name : k.short_name;
      if (name.size() > 96) name = name.substr(0, 93) + "...";
      char count[32];
      // Whole launches per step where every step launched it equally often, else one decimal.
      if (k.count_per_step == std::floor(k.count_per_step))
        std::snprintf(count, sizeof count, "%.0f", k.count_per_step);
      else
        std::snprintf(count, sizeof count, "%.1f", k.count_per_step);
      std::snprintf(line, sizeof line, "  %6s %12.3f %10s  %s\n", pct(k.share).c_str(), k.ns_per_step / 1e6, count,
                    name.c_str());
      out << line;
    }
  }
  for (const auto& m : b.memory) {
    out << "peak memory     device " << m.device << (m.kind == "device" ? "" : " (" + m.kind + " memory)") << ": "
        << format_bytes(static_cast<double>(m.peak_bytes));
    if (m.peak_step >= 0) out << " in step " << m.peak_step;
    out << " (" << m.allocations << " allocations, " << m.releases << " releases traced)\n";
  }
  return out.str();
}

}  // namespace ddpbench::profile
