#include "ddp/store.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "common/error.h"

namespace ddpbench::ddp {

std::string report_key(int rank) { return "ddpbench/reports/" + std::to_string(rank); }

namespace {

c10::intrusive_ptr<c10d::TCPStore> connect_store(const std::string& addr, int port, bool server, std::chrono::seconds timeout) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<std::uint16_t>(port);
  opts.isServer = server;
  opts.waitWorkers = false;
  opts.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(addr, opts);
}

}  // namespace

struct HostedStore::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

HostedStore::HostedStore(int port, std::chrono::seconds timeout) : impl_(std::make_unique<Impl>()) {
  try {
    impl_->store = connect_store("127.0.0.1", port, /*server=*/true, timeout);
  } catch (...) {
    rethrow_with_context("hosting the rendezvous store on port " + std::to_string(port));
  }
}

HostedStore::~HostedStore() = default;

std::optional<std::string> HostedStore::get(const std::string& key, std::chrono::milliseconds wait) {
  try {
    impl_->store->wait({key}, wait);
    const auto bytes = impl_->store->get(key);
    return std::string(bytes.begin(), bytes.end());
  } catch (const std::exception&) {
    return std::nullopt;  // not there within `wait`: the caller says which rank is missing
  }
}

void put_in_store(const std::string& addr, int port, const std::string& key, const std::string& value,
                  std::chrono::seconds timeout) {
  try {
    auto store = connect_store(addr, port, /*server=*/false, timeout);
    store->set(key, std::vector<std::uint8_t>(value.begin(), value.end()));
  } catch (...) {
    rethrow_with_context("putting " + key + " into the store at " + addr + ":" + std::to_string(port));
  }
}

}  // namespace ddpbench::ddp
