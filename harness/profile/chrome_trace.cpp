#include "profile/chrome_trace.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/strings.h"
#include "profile/analysis.h"

namespace ddpbench::profile {

namespace {

using nlohmann::json;

// Where a device record sits, for the links from the call that launched it.
struct DeviceEvent {
  std::uint32_t device = 0, stream = 0;
  std::uint64_t start = 0, end = 0;
  std::size_t event = 0;  // index of its trace event, for the External id
};

class Writer {
 public:
  Writer(const RankActivity& a, std::optional<std::uint64_t> base) : host_pid_(kHostPid + a.rank) {
    const std::optional<std::uint64_t> earliest = earliest_record(a);
    base_ = earliest.value_or(base.value_or(0));
    if (base && *base <= base_) base_ = *base;
  }

  std::uint64_t base() const { return base_; }
  std::int64_t host_pid() const { return host_pid_; }

  // Microseconds from the base: the division of an integer below 2^53 by 1000 is correctly rounded,
  // so the shortest decimal that reads back as this double is the exact value with 3 decimals.
  double ts(std::uint64_t ns) const { return static_cast<double>(ns - base_) / 1000.0; }
  static double dur(std::uint64_t start, std::uint64_t end) {
    return end > start ? static_cast<double>(end - start) / 1000.0 : 0.0;
  }

  json complete(std::string name, const char* cat, std::uint64_t start, std::uint64_t end, std::int64_t pid,
                std::uint64_t tid, json args) const {
    return {{"ph", "X"},  {"cat", cat},      {"name", std::move(name)},   {"pid", pid},
            {"tid", tid}, {"ts", ts(start)}, {"dur", dur(start, end)}, {"args", std::move(args)}};
  }

  json flow(bool start, std::uint32_t id, std::int64_t pid, std::uint64_t tid, std::uint64_t at) const {
    json f = {{"ph", start ? "s" : "f"}, {"id", id},          {"pid", pid},  {"tid", tid},
              {"ts", ts(at)},            {"cat", "ac2g"},     {"name", "ac2g"}};
    if (!start) f["bp"] = "e";  // binds to the enclosing slice, the device event
    return f;
  }

 private:
  std::uint64_t base_ = 0;
  std::int64_t host_pid_ = 0;
};

json metadata(const char* what, std::int64_t pid, std::uint64_t tid, json args) {
  return {{"ph", "M"}, {"name", what}, {"pid", pid}, {"tid", tid}, {"args", std::move(args)}};
}

json device_args(std::uint32_t device, std::uint32_t stream, std::uint32_t correlation) {
  return {{"device", device}, {"stream", stream}, {"correlation", correlation}};
}

// bytes per nanosecond is GB/s; none for a zero-length record (Kineto writes "N/A" there, which
// HTA's float column would not take).
void add_bandwidth(json& args, std::uint64_t bytes, std::uint64_t start, std::uint64_t end) {
  if (end > start) args["memory bandwidth (GB/s)"] = static_cast<double>(bytes) / static_cast<double>(end - start);
}

// For each call (indices sorted by start), the innermost of the ranges (indices sorted by start,
// outer first at equal starts) that holds its start, written into out; -1 where none does.
void sweep_innermost(const RankActivity& a, const std::vector<std::size_t>& ranges,
                     const std::vector<std::size_t>& calls, std::vector<std::ptrdiff_t>& out) {
  std::vector<std::size_t> open;
  std::size_t next = 0;
  for (std::size_t c : calls) {
    const std::uint64_t t = a.api_calls[c].start;
    while (next < ranges.size() && a.ranges[ranges[next]].start <= t) open.push_back(ranges[next++]);
    // Ranges that ended are dropped wherever they sit: ranges that overlap without nesting
    // (start/end ranges, other threads' ranges) would otherwise hide an open one underneath.
    std::erase_if(open, [&](std::size_t r) { return a.ranges[r].end <= t; });
    out[c] = open.empty() ? -1 : static_cast<std::ptrdiff_t>(open.back());
  }
}

// For each call, the index (into activity.ranges) of the range it was made in; -1 where none: the
// innermost range of its own thread that holds it, or else the innermost range open on any thread at
// that moment (the latest started). The second is how the backward pass's launches, which PyTorch's
// autograd engine makes from a worker thread (with ranges of its own only around each bucket's
// allreduce), count for the trainer's `backward`.
std::vector<std::ptrdiff_t> enclosing_ranges(const RankActivity& a) {
  auto by_start = [&](std::vector<std::size_t>& ranges) {
    std::stable_sort(ranges.begin(), ranges.end(), [&](std::size_t x, std::size_t y) {
      const auto &p = a.ranges[x], &q = a.ranges[y];
      return p.start != q.start ? p.start < q.start : p.end > q.end;
    });
  };
  auto calls_by_start = [&](std::vector<std::size_t>& calls) {
    std::stable_sort(calls.begin(), calls.end(),
                     [&](std::size_t x, std::size_t y) { return a.api_calls[x].start < a.api_calls[y].start; });
  };
  std::map<std::uint64_t, std::vector<std::size_t>> ranges_by_thread, calls_by_thread;
  std::vector<std::size_t> all_ranges(a.ranges.size()), unheld;
  for (std::size_t i = 0; i < a.ranges.size(); ++i) {
    ranges_by_thread[a.ranges[i].thread].push_back(i);
    all_ranges[i] = i;
  }
  for (std::size_t i = 0; i < a.api_calls.size(); ++i) calls_by_thread[a.api_calls[i].thread].push_back(i);
  std::vector<std::ptrdiff_t> out(a.api_calls.size(), -1);
  for (auto& [thread, calls] : calls_by_thread) {
    calls_by_start(calls);
    if (auto own = ranges_by_thread.find(thread); own != ranges_by_thread.end()) {
      by_start(own->second);
      sweep_innermost(a, own->second, calls, out);
    }
    for (std::size_t c : calls)
      if (out[c] < 0) unheld.push_back(c);
  }
  calls_by_start(unheld);
  by_start(all_ranges);
  sweep_innermost(a, all_ranges, unheld, out);
  return out;
}

}  // namespace

std::optional<std::uint64_t> earliest_record(const RankActivity& a) {
  std::optional<std::uint64_t> t;
  auto take = [&](std::uint64_t x) { t = t ? std::min(*t, x) : x; };
  for (const auto& r : a.ranges) take(r.start);
  for (const auto& c : a.api_calls) take(c.start);
  for (const auto& k : a.kernels) take(k.start);
  for (const auto& m : a.memcpys) take(m.start);
  for (const auto& m : a.memsets) take(m.start);
  return t;
}

json chrome_trace(const RankActivity& a, const TraceOptions& options) {
  const Writer w(a, options.base_ns);
  const std::int64_t host_pid = w.host_pid();
  json events = json::array();

  // Track names: streams per device, host threads.
  std::map<std::uint32_t, std::set<std::uint32_t>> streams;
  std::set<std::uint64_t> threads;

  // Host ranges; External id = index + 1.
  // Without launch records no ProfilerStep: HTA keeps only device work whose launch it sees in a
  // step, so it would drop every device event; under their own names the steps cost it nothing.
  std::vector<bool> is_step(a.ranges.size(), false);
  std::vector<int> step_number(a.ranges.size(), -1);
  if (!a.api_calls.empty()) {
    const auto steps = step_ranges(a, options.step_marker);
    for (std::size_t n = 0; n < steps.size(); ++n) {
      is_step[steps[n]] = true;
      step_number[steps[n]] = static_cast<int>(n);
    }
  }
  for (std::size_t i = 0; i < a.ranges.size(); ++i) {
    const RangeRecord& r = a.ranges[i];
    threads.insert(r.thread);
    json args = {{"External id", i + 1}};
    std::string name = r.name;
    if (is_step[i]) {
      args["range"] = r.name;
      name = "ProfilerStep#" + std::to_string(step_number[i]);
    }
    events.push_back(
        w.complete(std::move(name), "user_annotation", r.start, r.end, host_pid, r.thread, std::move(args)));
  }

  // Device records, and where each sits by correlation id, for the links below.
  std::vector<json> device_events;
  std::unordered_map<std::uint32_t, std::vector<DeviceEvent>> launched;
  auto place = [&](json event, std::uint32_t correlation, std::uint32_t device, std::uint32_t stream,
                   std::uint64_t start, std::uint64_t end) {
    streams[device].insert(stream);
    launched[correlation].push_back({device, stream, start, end, device_events.size()});
    device_events.push_back(std::move(event));
  };
  for (const auto& k : a.kernels) {
    json args = device_args(k.device, k.stream, k.correlation);
    args["grid"] = {k.grid[0], k.grid[1], k.grid[2]};
    args["block"] = {k.block[0], k.block[1], k.block[2]};
    place(w.complete(k.name, "kernel", k.start, k.end, k.device, k.stream, std::move(args)), k.correlation, k.device,
          k.stream, k.start, k.end);
  }
  for (const auto& m : a.memcpys) {
    json args = device_args(m.device, m.stream, m.correlation);
    args["bytes"] = m.bytes;
    add_bandwidth(args, m.bytes, m.start, m.end);
    args["kind"] = m.kind;
    const std::string name = m.kind.empty() ? "Memcpy" : "Memcpy " + m.kind;
    place(w.complete(name, "gpu_memcpy", m.start, m.end, m.device, m.stream, std::move(args)), m.correlation, m.device,
          m.stream, m.start, m.end);
  }
  for (const auto& m : a.memsets) {
    json args = device_args(m.device, m.stream, m.correlation);
    args["bytes"] = m.bytes;
    add_bandwidth(args, m.bytes, m.start, m.end);
    place(w.complete("Memset (Device)", "gpu_memset", m.start, m.end, m.device, m.stream, std::move(args)),
          m.correlation, m.device, m.stream, m.start, m.end);
  }

  // Launch and wait calls, their flows, and the External id they pass on to what they launched.
  const std::vector<std::ptrdiff_t> holder = enclosing_ranges(a);
  json flows = json::array();
  for (std::size_t i = 0; i < a.api_calls.size(); ++i) {
    const ApiCallRecord& c = a.api_calls[i];
    threads.insert(c.thread);
    json args = {{"cbid", c.cbid}, {"correlation", c.correlation}};
    if (holder[i] >= 0) args["External id"] = holder[i] + 1;
    events.push_back(w.complete(c.name, c.driver ? "cuda_driver" : "cuda_runtime", c.start, c.end, host_pid, c.thread,
                                std::move(args)));
    auto it = launched.find(c.correlation);
    if (it == launched.end()) continue;
    flows.push_back(w.flow(true, c.correlation, host_pid, c.thread, c.start));
    for (const DeviceEvent& d : it->second) {
      if (holder[i] >= 0) device_events[d.event]["args"]["External id"] = holder[i] + 1;
      flows.push_back(w.flow(false, c.correlation, d.device, d.stream, d.start));
    }
  }

  // Ranges on the GPU timeline: per stream, the work launched in each range or in a range that lies
  // within it, on any thread (a bucket's allreduce on the autograd thread, within `backward`).
  {
    std::vector<std::size_t> calls(a.api_calls.size());  // by start
    for (std::size_t i = 0; i < calls.size(); ++i) calls[i] = i;
    std::stable_sort(calls.begin(), calls.end(),
                     [&](std::size_t x, std::size_t y) { return a.api_calls[x].start < a.api_calls[y].start; });
    for (std::size_t r = 0; r < a.ranges.size(); ++r) {
      const RangeRecord& range = a.ranges[r];
      if (is_step[r]) continue;
      auto first = std::lower_bound(calls.begin(), calls.end(), range.start,
                                    [&](std::size_t c, std::uint64_t t) { return a.api_calls[c].start < t; });
      // (device, stream) -> (first start, last end)
      std::map<std::pair<std::uint32_t, std::uint32_t>, std::pair<std::uint64_t, std::uint64_t>> span;
      for (auto c = first; c != calls.end() && a.api_calls[*c].start < range.end; ++c) {
        if (holder[*c] < 0) continue;
        const RangeRecord& made_in = a.ranges[static_cast<std::size_t>(holder[*c])];
        if (made_in.start < range.start || made_in.end > range.end) continue;
        auto it = launched.find(a.api_calls[*c].correlation);
        if (it == launched.end()) continue;
        for (const DeviceEvent& d : it->second) {
          auto [s, inserted] = span.try_emplace({d.device, d.stream}, d.start, d.end);
          if (!inserted) s->second = {std::min(s->second.first, d.start), std::max(s->second.second, d.end)};
        }
      }
      for (const auto& [where, se] : span)
        events.push_back(w.complete(range.name, "gpu_user_annotation", se.first, se.second, where.first, where.second,
                                    {{"External id", r + 1}}));
    }
  }

  json meta = json::array();
  meta.push_back(metadata("process_name", host_pid, 0, {{"name", "rank " + std::to_string(a.rank) + " host"}}));
  meta.push_back(metadata("process_sort_index", host_pid, 0, {{"sort_index", -1}}));
  for (std::uint64_t t : threads)
    meta.push_back(metadata("thread_name", host_pid, t, {{"name", "thread " + std::to_string(t)}}));
  for (const auto& [device, ids] : streams) {
    meta.push_back(metadata("process_name", device, 0, {{"name", "GPU " + std::to_string(device)}}));
    meta.push_back(metadata("process_sort_index", device, 0, {{"sort_index", device}}));
    for (std::uint32_t s : ids)
      meta.push_back(metadata("thread_name", device, s, {{"name", "stream " + std::to_string(s)}}));
  }
  // Metadata first, as Kineto writes it, so that tracks are named before they fill.
  for (auto& e : events) meta.push_back(std::move(e));
  for (auto& e : device_events) meta.push_back(std::move(e));
  for (auto& e : flows) meta.push_back(std::move(e));

  json devices = json::array();
  if (streams.empty()) {
    devices.push_back({{"id", 0}, {"name", a.device_name}});
  } else {
    for (const auto& [device, ids] : streams) devices.push_back({{"id", device}, {"name", a.device_name}});
  }
  return {{"schemaVersion", 1},
          {"distributedInfo", {{"backend", "nccl"}, {"rank", a.rank}, {"world_size", a.world_size}}},
          {"deviceProperties", std::move(devices)},
          {"baseTimeNanoseconds", w.base()},
          {"displayTimeUnit", "ms"},
          {"ddpbench",
           {{"dropped_records", a.dropped_records},
            {"api_calls", a.api_calls.size()},
            {"device_events_without_launch", launch_coverage(a).without_launch}}},
          {"traceEvents", std::move(meta)}};
}

std::string chrome_trace_text(const json& trace) {
  // Kernel names come from the demangler and an external program's NVTX: replace rather than throw on
  // bytes that are not UTF-8, since a trace with one odd name is still worth having.
  auto dump = [](const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); };
  // An object's keys and values with ", " and ": " between them, one level deep: `"rank": 0`.
  auto spaced = [&](const json& v) {
    if (!v.is_object()) return dump(v);
    std::string out = "{";
    for (auto it = v.begin(); it != v.end(); ++it)
      out += (it == v.begin() ? "" : ", ") + dump(it.key()) + ": " + dump(it.value());
    return out + "}";
  };
  static const char* const kFirst[] = {"schemaVersion", "distributedInfo", "deviceProperties", "baseTimeNanoseconds",
                                       "displayTimeUnit"};
  std::string out = "{";
  bool first = true;
  auto key_line = [&](const std::string& key, const json& value) {
    out += (first ? "\n  " : ",\n  ") + dump(key) + ": " + spaced(value);
    first = false;
  };
  for (const char* key : kFirst)
    if (trace.contains(key)) key_line(key, trace[key]);
  for (auto it = trace.begin(); it != trace.end(); ++it)
    if (it.key() != "traceEvents" && std::find(std::begin(kFirst), std::end(kFirst), it.key()) == std::end(kFirst))
      key_line(it.key(), it.value());
  out += first ? "\n  \"traceEvents\": [" : ",\n  \"traceEvents\": [";
  const json empty = json::array();
  const json& events = trace.contains("traceEvents") ? trace["traceEvents"] : empty;
  for (std::size_t i = 0; i < events.size(); ++i) out += (i ? ",\n    " : "\n    ") + dump(events[i]);
  out += "\n  ]\n}\n";
  return out;
}

void write_chrome_trace(const RankActivity& activity, const std::string& path, const TraceOptions& options) {
  write_file_atomic(path, chrome_trace_text(chrome_trace(activity, options)));
}

}  // namespace ddpbench::profile
