#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
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

int pick_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw RunError(std::string("cannot pick a free port: socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;  // the kernel picks an unused ephemeral port
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = errno;
    ::close(fd);
    throw RunError(std::string("cannot pick a free port on 127.0.0.1: ") + std::strerror(err));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace ddpbench::launch
