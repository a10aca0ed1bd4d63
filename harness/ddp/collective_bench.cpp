#include "ddp/collective_bench.h"

#include <functional>
#include <limits>
#include <vector>

#include "collectives/collectives.h"
#include "common/error.h"
#include "ddp/ddp.h"
#include "device/device.h"

namespace ddpbench::ddp {

namespace coll = ddpbench::collectives;

namespace {

// Writes the stretches into t: one period made on the host, tiled on the device.
void write(at::Tensor t, const std::vector<coll::Stretch>& stretches) {
  for (const auto& s : stretches) {
    if (s.count == 0) continue;
    const auto n = static_cast<std::int64_t>(s.period.size());
    const auto period = at::tensor(s.period, at::TensorOptions().dtype(at::kDouble)).to(t.options());
    t.narrow(0, s.offset, s.count).copy_(period.repeat({(s.count + n - 1) / n}).narrow(0, 0, s.count));
  }
}

// How each collective of the table is issued on the buffers (nccl-tests' runColl).
using Issue = std::function<c10::intrusive_ptr<c10d::Work>(Communicator&, at::Tensor& send, at::Tensor& recv)>;
Issue issue_of(std::string_view name) {
  if (name == "all_reduce") return [](Communicator& c, at::Tensor&, at::Tensor& recv) { return c.allreduce_sum_async(recv); };
  if (name == "reduce_scatter")
    return [](Communicator& c, at::Tensor& send, at::Tensor& recv) { return c.reduce_scatter_sum_async(recv, send); };
  if (name == "all_gather") return [](Communicator& c, at::Tensor& send, at::Tensor& recv) { return c.all_gather_async(recv, send); };
  if (name == "broadcast") return [](Communicator& c, at::Tensor&, at::Tensor& recv) { return c.broadcast_async(recv, 0); };
  if (name == "copy")
    return [](Communicator&, at::Tensor& send, at::Tensor& recv) {
      recv.copy_(send);
      return c10::intrusive_ptr<c10d::Work>();
    };
  throw UsageError("no device entry for collective '" + std::string(name) + "'");
}

}  // namespace

struct CollectiveBench::State {
  std::string device;
  int device_index = 0;
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<device::IntervalTimer> timer;
  at::Tensor send, recv;
  Issue issue;

  at::TensorOptions options(at::ScalarType dtype) const {
    return at::TensorOptions().dtype(dtype).device(
        device == "cuda" ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)) : at::Device(at::kCPU));
  }
  double sum_over_ranks(double x) {
    auto t = at::full({1}, x, options(at::kDouble));
    comm->allreduce_sum(t);
    return t.item<double>();
  }
  void run(int n) {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int i = 0; i < n; ++i) works.push_back(issue(*comm, send, recv));
    for (auto& w : works)
      if (w) w->wait();
  }
};

CollectiveBench::CollectiveBench(const std::string& device, int rank, int local_rank, int world_size,
                                 const std::string& master_addr, int master_port)
    : s_(std::make_unique<State>()) {
  if (device != "cpu" && device != "cuda") throw UsageError("--device: '" + device + "' (cpu or cuda)");
  s_->device = device;
  s_->device_index = device == "cuda" ? local_rank : 0;
  if (device == "cuda") device::set_cuda_device(s_->device_index);
  Rendezvous rv;
  rv.master_addr = master_addr;
  rv.master_port = master_port;
  rv.rank = rank;
  rv.world_size = world_size;
  s_->comm = Communicator::connect(device == "cuda" ? "nccl" : "gloo", rv, s_->device_index);
  s_->timer = std::make_unique<device::IntervalTimer>(device, s_->device_index);
}

CollectiveBench::~CollectiveBench() = default;

int CollectiveBench::rank() const { return s_->comm->rank(); }
int CollectiveBench::world_size() const { return s_->comm->world_size(); }
std::string CollectiveBench::backend() const { return s_->comm->backend_name(); }

std::int64_t CollectiveBench::prepare_and_check(const CollectivePoint& p, int inject_error_rank) {
  const auto& c = coll::find(p.collective);
  const auto dtype = p.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  const auto layout = c.layout(p.bytes, coll::element_bytes(p.dtype), world_size(), rank());
  if (layout.send == 0 || layout.recv == 0)
    throw UsageError(std::to_string(p.bytes) + " B of " + p.dtype + " cannot be split over " + std::to_string(world_size()) + " ranks");
  const auto o = s_->options(dtype);
  release();
  // In place, one buffer holds both as the layout says.
  if (!p.in_place) {
    s_->send = at::empty({layout.send}, o);
    s_->recv = at::empty({layout.recv}, o);
  } else if (layout.send >= layout.recv) {
    s_->send = at::empty({layout.send}, o);
    s_->recv = layout.send == layout.recv ? s_->send : s_->send.narrow(0, layout.in_place_offset, layout.recv);
  } else {
    s_->recv = at::empty({layout.recv}, o);
    s_->send = s_->recv.narrow(0, layout.in_place_offset, layout.send);
  }
  s_->issue = issue_of(c.name);

  write(s_->send, coll::send_contents(c, layout, rank()));
  if (!p.in_place) s_->recv.fill_(std::numeric_limits<double>::quiet_NaN());  // never a right answer
  s_->run(1);
  if (rank() == inject_error_rank) s_->recv.narrow(0, 0, 1).add_(1);
  std::int64_t wrong = 0;
  {
    auto expected = at::empty({layout.recv}, o);
    write(expected, c.expected(c.pattern, layout, rank(), world_size()));
    wrong = static_cast<std::int64_t>(s_->sum_over_ranks(static_cast<double>(s_->recv.ne(expected).sum().item<std::int64_t>())));
  }
  // Zeros while timing: repeated sums stay finite and no denormals slow the CPU down.
  s_->send.zero_();
  s_->recv.zero_();
  return wrong;
}

double CollectiveBench::timed_batch(int batch) {
  if (!s_->issue) throw RunError("timed_batch before prepare_and_check");
  s_->comm->barrier();  // all ranks start together, as nccl-tests does before it times
  s_->timer->start();
  s_->run(batch);
  const double seconds = s_->timer->stop_seconds() / batch;
  return s_->sum_over_ranks(seconds) / world_size();
}

void CollectiveBench::release() {
  s_->send = at::Tensor();
  s_->recv = at::Tensor();
}

void CollectiveBench::shutdown() {
  release();
  s_->comm->shutdown();
}

}  // namespace ddpbench::ddp
