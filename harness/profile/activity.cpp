#include "profile/activity.h"

#include <limits>
#include <string>
#include <utility>

#include "common/error.h"

namespace ddpbench::profile {

namespace {

using nlohmann::json;

json dims_json(const std::uint32_t (&v)[3]) { return json::array({v[0], v[1], v[2]}); }

// Reads one object of the document; every complaint names the element (kernels[12].start), so that a
// hand-edited or truncated file is fixed without guessing.
class Reader {
 public:
  Reader(const json& obj, std::string where) : obj_(obj), where_(std::move(where)) {
    if (!obj_.is_object()) fail("", "expected an object");
  }

  std::uint64_t u64(const char* key, bool required = true, std::uint64_t fallback = 0) const {
    const json* v = find(key, required);
    if (!v) return fallback;
    if (v->is_number_unsigned()) return v->get<std::uint64_t>();
    if (v->is_number_integer() && v->get<std::int64_t>() >= 0)
      return static_cast<std::uint64_t>(v->get<std::int64_t>());
    fail(key, "expected a non-negative integer");
  }

  std::uint32_t u32(const char* key, bool required = false) const {
    const std::uint64_t v = u64(key, required);
    if (v > std::numeric_limits<std::uint32_t>::max()) fail(key, "out of range");
    return static_cast<std::uint32_t>(v);
  }

  int integer(const char* key, bool required, int fallback) const {
    const json* v = find(key, required);
    if (!v) return fallback;
    if (!v->is_number_integer()) fail(key, "expected an integer");
    const auto x = v->get<std::int64_t>();
    if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max()) fail(key, "out of range");
    return static_cast<int>(x);
  }

  std::string str(const char* key, bool required) const {
    const json* v = find(key, required);
    if (!v) return {};
    if (!v->is_string()) fail(key, "expected a string");
    return v->get<std::string>();
  }

  bool boolean(const char* key, bool fallback) const {
    const json* v = find(key, false);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(key, "expected true or false");
    return v->get<bool>();
  }

  void dims(const char* key, std::uint32_t (&out)[3]) const {
    const json* v = find(key, false);
    if (!v) return;
    if (!v->is_array() || v->size() != 3) fail(key, "expected an array of 3 integers");
    for (std::size_t i = 0; i < 3; ++i) {
      const json& x = (*v)[i];
      if (!x.is_number_integer() || x.get<std::int64_t>() < 0 ||
          x.get<std::uint64_t>() > std::numeric_limits<std::uint32_t>::max())
        fail(key, "expected an array of 3 integers");
      out[i] = x.get<std::uint32_t>();
    }
  }

  // Each element of the array under key (absent: none), with its own reader.
  template <typename F>
  void each(const char* key, F&& f) const {
    const json* v = find(key, false);
    if (!v) return;
    if (!v->is_array()) fail(key, "expected an array");
    for (std::size_t i = 0; i < v->size(); ++i)
      f(Reader((*v)[i], where_ + (where_.empty() ? "" : ".") + key + "[" + std::to_string(i) + "]"));
  }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    std::string at = where_;
    if (!key.empty()) at += (at.empty() ? "" : ".") + key;
    throw UsageError("malformed activity document" + (at.empty() ? std::string() : " at " + at) + ": " + what);
  }

 private:
  const json* find(const char* key, bool required) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) {
      if (required) fail(key, "missing");
      return nullptr;
    }
    return &*it;
  }

  const json& obj_;
  std::string where_;
};

}  // namespace

// Kernels, memcpys and memsets share their placement on the device timeline.
template <typename Record>
json device_event_json(const Record& r) {
  return {{"start", r.start}, {"end", r.end}, {"device", r.device}, {"stream", r.stream}, {"correlation", r.correlation}};
}

template <typename Record>
void read_device_event(const Reader& r, Record& out) {
  out.start = r.u64("start");
  out.end = r.u64("end");
  out.device = r.u32("device");
  out.stream = r.u32("stream");
  out.correlation = r.u32("correlation");
}

json to_json(const RankActivity& a) {
  json kernels = json::array();
  for (const auto& k : a.kernels) {
    auto j = device_event_json(k);
    j.update({{"name", k.name}, {"grid", dims_json(k.grid)}, {"block", dims_json(k.block)}});
    kernels.push_back(std::move(j));
  }
  json memcpys = json::array();
  for (const auto& m : a.memcpys) {
    auto j = device_event_json(m);
    j.update({{"bytes", m.bytes}, {"kind", m.kind}});
    memcpys.push_back(std::move(j));
  }
  json memsets = json::array();
  for (const auto& m : a.memsets) {
    auto j = device_event_json(m);
    j["bytes"] = m.bytes;
    memsets.push_back(std::move(j));
  }
  json memory = json::array();
  for (const auto& m : a.memory)
    memory.push_back({{"timestamp", m.timestamp},
                      {"device", m.device},
                      {"address", m.address},
                      {"bytes", m.bytes},
                      {"allocation", m.allocation},
                      {"kind", m.kind}});
  json ranges = json::array();
  for (const auto& r : a.ranges)
    ranges.push_back({{"start", r.start}, {"end", r.end}, {"thread", r.thread}, {"name", r.name}});
  json api_calls = json::array();
  for (const auto& c : a.api_calls)
    api_calls.push_back({{"start", c.start},
                         {"end", c.end},
                         {"thread", c.thread},
                         {"correlation", c.correlation},
                         {"cbid", c.cbid},
                         {"driver", c.driver},
                         {"name", c.name}});
  return {{"rank", a.rank},
          {"world_size", a.world_size},
          {"device_name", a.device_name},
          {"dropped_records", a.dropped_records},
          {"untimed_records", a.untimed_records},
          {"overhead_records", a.overhead_records},
          {"overhead_ns", a.overhead_ns},
          {"kernels", std::move(kernels)},
          {"memcpys", std::move(memcpys)},
          {"memsets", std::move(memsets)},
          {"memory", std::move(memory)},
          {"ranges", std::move(ranges)},
          {"api_calls", std::move(api_calls)}};
}

RankActivity activity_from_json(const json& j) {
  const Reader top(j, "");
  RankActivity a;
  a.rank = top.integer("rank", true, 0);
  a.world_size = top.integer("world_size", true, 1);
  if (a.world_size < 1) top.fail("world_size", "must be at least 1");
  if (a.rank < 0 || a.rank >= a.world_size) top.fail("rank", "must lie in [0, world_size)");
  a.device_name = top.str("device_name", false);
  a.dropped_records = top.u64("dropped_records", false);
  a.untimed_records = top.u64("untimed_records", false);
  a.overhead_records = top.u64("overhead_records", false);
  a.overhead_ns = top.u64("overhead_ns", false);
  top.each("kernels", [&](const Reader& r) {
    KernelRecord k;
    read_device_event(r, k);
    k.name = r.str("name", true);
    r.dims("grid", k.grid);
    r.dims("block", k.block);
    a.kernels.push_back(std::move(k));
  });
  top.each("memcpys", [&](const Reader& r) {
    MemcpyRecord m;
    read_device_event(r, m);
    m.bytes = r.u64("bytes", false);
    m.kind = r.str("kind", false);
    a.memcpys.push_back(std::move(m));
  });
  top.each("memsets", [&](const Reader& r) {
    MemsetRecord m;
    read_device_event(r, m);
    m.bytes = r.u64("bytes", false);
    a.memsets.push_back(m);
  });
  top.each("memory", [&](const Reader& r) {
    MemoryRecord m;
    m.timestamp = r.u64("timestamp");
    m.device = r.u32("device");
    m.address = r.u64("address", false);
    m.bytes = r.u64("bytes");
    m.allocation = r.boolean("allocation", true);
    if (std::string kind = r.str("kind", false); !kind.empty()) m.kind = std::move(kind);  // older files: device
    a.memory.push_back(std::move(m));
  });
  top.each("ranges", [&](const Reader& r) {
    RangeRecord g;
    g.start = r.u64("start");
    g.end = r.u64("end");
    g.thread = r.u64("thread", false);
    g.name = r.str("name", true);
    a.ranges.push_back(std::move(g));
  });
  top.each("api_calls", [&](const Reader& r) {
    ApiCallRecord c;
    c.start = r.u64("start");
    c.end = r.u64("end");
    c.thread = r.u64("thread", false);
    c.correlation = r.u32("correlation");
    c.cbid = r.u32("cbid");
    c.driver = r.boolean("driver", false);
    c.name = r.str("name", true);
    a.api_calls.push_back(std::move(c));
  });
  return a;
}

}  // namespace ddpbench::profile
