#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>

#include "common/error.h"
#include "common/strings.h"
#include "launch/launch.h"

namespace ddpbench::launch {
namespace {

const std::string* lookup(const std::map<std::string, std::string>& env, const char* name) {
  auto it = env.find(name);
  return it == env.end() || it->second.empty() ? nullptr : &it->second;
}

int int_variable(const char* name, const std::string& value, int min) {
  auto v = parse_int(value);
  if (!v || *v < min || *v > 1'000'000)
    throw UsageError(std::string(name) + "=" + value + ": expected an integer of at least " +
                     std::to_string(min));
  return static_cast<int>(*v);
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  const std::string list = trim(nodelist);
  auto malformed = [&]() { return UsageError("malformed Slurm node list \"" + nodelist + "\""); };
  std::string host;
  for (std::size_t i = 0; i < list.size(); ++i) {
    char c = list[i];
    if (c == ',') break;  // only a comma outside brackets separates hosts
    if (c == ']') throw malformed();
    if (c != '[') {
      host += c;
      continue;
    }
    auto close = list.find(']', i);
    if (close == std::string::npos) throw malformed();
    // "03-05,09": the first number of the first range, zero padding kept as written.
    std::string inner = list.substr(i + 1, close - i - 1);
    std::string first = inner.substr(0, inner.find_first_of(",-"));
    if (first.empty()) throw malformed();
    host += first;
    i = close;
  }
  return host;
}

Topology topology_from_slurm(const std::map<std::string, std::string>& env, Topology base) {
  const char* nnodes_name = "SLURM_NNODES";
  const std::string* nnodes = lookup(env, nnodes_name);
  if (!nnodes) nnodes = lookup(env, nnodes_name = "SLURM_JOB_NUM_NODES");
  if (nnodes) base.nnodes = int_variable(nnodes_name, *nnodes, 1);
  if (const std::string* id = lookup(env, "SLURM_NODEID")) base.node_rank = int_variable("SLURM_NODEID", *id, 0);
  const std::string* list = lookup(env, "SLURM_JOB_NODELIST");
  if (!list) list = lookup(env, "SLURM_NODELIST");
  if (list) {
    std::string host = first_slurm_host(*list);
    if (!host.empty()) base.master_addr = host;
  }
  return base;
}

namespace {
bool can_listen_on(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);  // where torch's TCPStore and our rendezvous listen
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}
}  // namespace

int pick_free_port() {
  // Below Linux's ephemeral range (32768-60999 by default): a port picked in that range by binding
  // port 0 can be handed to some process's outgoing connection in the seconds before rank 0
  // listens on it (seen: EADDRINUSE in the rendezvous of four Python ranks). Start at a point
  // that differs per process so that launchers running side by side do not pick the same one.
  constexpr int kFirst = 20000, kCount = 12000;
  const auto salt = static_cast<std::uint64_t>(::getpid()) * 0x9E3779B97F4A7C15ull ^
                    static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  for (int attempt = 0; attempt < 64; ++attempt) {
    const int port = kFirst + static_cast<int>((salt + static_cast<std::uint64_t>(attempt) * 7919u) % kCount);
    if (can_listen_on(port)) return port;
  }
  throw RunError("cannot pick a free port: 64 ports between " + std::to_string(kFirst) + " and " +
                 std::to_string(kFirst + kCount - 1) + " are all in use (pass --master-port)");
}

}  // namespace ddpbench::launch
