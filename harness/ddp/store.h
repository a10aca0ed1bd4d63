// The rendezvous store (a c10d TCPStore) beyond the process group, free of LibTorch headers: for a
// run over several nodes, node 0's launcher hosts it, so that it outlives the ranks, and every rank
// leaves its report in it for node 0 to gather into one document.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace ddpbench::ddp {

// Set to 1 in the ranks' environment when node 0's launcher hosts the store (train::RankEnv).
inline constexpr const char* kReportStoreVariable = "DDPBENCH_REPORT_STORE";

// Where a rank's report goes in the store.
std::string report_key(int rank);

class HostedStore {
 public:
  // Listens on port; the ranks' process groups then connect to it as clients (Rendezvous::store_hosted).
  HostedStore(int port, std::chrono::seconds timeout);
  ~HostedStore();
  HostedStore(const HostedStore&) = delete;
  HostedStore& operator=(const HostedStore&) = delete;
  // The value of key, waiting for it up to `wait`; nullopt when it did not come.
  std::optional<std::string> get(const std::string& key, std::chrono::milliseconds wait);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Sets key in the store at addr:port, as a client. RunError naming the store when it cannot.
void put_in_store(const std::string& addr, int port, const std::string& key, const std::string& value,
                  std::chrono::seconds timeout);

}  // namespace ddpbench::ddp
