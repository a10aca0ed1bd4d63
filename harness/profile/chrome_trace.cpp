#include "profile/chrome_trace.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "common/strings.h"

namespace ddpbench::profile {

namespace {

using nlohmann::json;

double us(std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

// From the ns difference, not the difference of two rounded ts, so short kernels keep their length.
double dur_us(std::uint64_t start, std::uint64_t end) { return end > start ? us(end - start) : 0.0; }

json complete(std::string name, const char* cat, std::uint64_t start, std::uint64_t end, std::int64_t pid,
              std::uint64_t tid, json args) {
  return {{"ph", "X"},  {"cat", cat},      {"name", std::move(name)},   {"pid", pid},
          {"tid", tid}, {"ts", us(start)}, {"dur", dur_us(start, end)}, {"args", std::move(args)}};
}

json metadata(const char* what, std::int64_t pid, std::uint64_t tid, json args) {
  return {{"ph", "M"}, {"name", what}, {"pid", pid}, {"tid", tid}, {"args", std::move(args)}};
}

}  // namespace

json chrome_trace(const RankActivity& a) {
  json events = json::array();
  const std::int64_t host_pid = kHostPid + a.rank;

  // Streams per device and host threads, for the names Perfetto shows on each track.
  std::map<std::uint32_t, std::set<std::uint32_t>> streams;
  std::set<std::uint64_t> threads;

  for (const auto& r : a.ranges) {
    threads.insert(r.thread);
    events.push_back(complete(r.name, "user_annotation", r.start, r.end, host_pid, r.thread, json::object()));
  }
  for (const auto& k : a.kernels) {
    streams[k.device].insert(k.stream);
    json args = {{"device", k.device},
                 {"stream", k.stream},
                 {"correlation", k.correlation},
                 {"grid", {k.grid[0], k.grid[1], k.grid[2]}},
                 {"block", {k.block[0], k.block[1], k.block[2]}}};
    events.push_back(complete(k.name, "kernel", k.start, k.end, k.device, k.stream, std::move(args)));
  }
  for (const auto& m : a.memcpys) {
    streams[m.device].insert(m.stream);
    json args = {{"device", m.device},
                 {"stream", m.stream},
                 {"correlation", m.correlation},
                 {"bytes", m.bytes},
                 {"kind", m.kind}};
    const std::string name = m.kind.empty() ? "Memcpy" : "Memcpy " + m.kind;
    events.push_back(complete(name, "gpu_memcpy", m.start, m.end, m.device, m.stream, std::move(args)));
  }
  for (const auto& m : a.memsets) {
    streams[m.device].insert(m.stream);
    json args = {{"device", m.device}, {"stream", m.stream}, {"correlation", m.correlation}, {"bytes", m.bytes}};
    events.push_back(complete("Memset (Device)", "gpu_memset", m.start, m.end, m.device, m.stream, std::move(args)));
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
  // Metadata first, as the PyTorch profiler writes it, so that tracks are named before they fill.
  for (auto& e : events) meta.push_back(std::move(e));

  json devices = json::array();
  if (streams.empty()) {
    devices.push_back({{"id", 0}, {"name", a.device_name}});
  } else {
    for (const auto& [device, ids] : streams) devices.push_back({{"id", device}, {"name", a.device_name}});
  }
  return {{"schemaVersion", 1},
          {"distributedInfo", {{"backend", "nccl"}, {"rank", a.rank}, {"world_size", a.world_size}}},
          {"deviceProperties", std::move(devices)},
          {"ddpbench", {{"dropped_records", a.dropped_records}}},
          {"traceEvents", std::move(meta)},
          {"displayTimeUnit", "ms"}};
}

void write_chrome_trace(const RankActivity& activity, const std::string& path) {
  // Kernel names come from the demangler and an external program's NVTX: replace rather than throw on
  // bytes that are not UTF-8, since a trace with one odd name is still worth having.
  write_file_atomic(path, chrome_trace(activity).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace ddpbench::profile
