// The device half of the collectives benchmark (bench/collectives): the buffers of one size point,
// laid out, filled and checked as the collectives table says, run through this rank's Communicator
// (Gloo on the CPU, NCCL on GPUs). Free of LibTorch headers, so that the benchmark program compiles
// without them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace ddpbench::ddp {

struct CollectivePoint {
  std::string collective;  // a name in collectives::table()
  std::string dtype;       // bf16 | fp32
  bool in_place = false;
  std::int64_t bytes = 0;
};

class CollectiveBench {
 public:
  // Connects this rank; device "cpu" (Gloo) or "cuda" (NCCL, on GPU local_rank).
  CollectiveBench(const std::string& device, int rank, int local_rank, int world_size, const std::string& master_addr,
                  int master_port);
  ~CollectiveBench();
  CollectiveBench(const CollectiveBench&) = delete;
  CollectiveBench& operator=(const CollectiveBench&) = delete;

  int rank() const;
  int world_size() const;
  std::string backend() const;

  // Allocates the buffers of p, fills each rank's send buffer with its data, runs the collective
  // once and compares the receive buffer with the table's expectation: the wrong elements, summed
  // over ranks (0 when right). inject_error_rank: that rank spoils one element first (a test of the
  // check itself; -1: none). The buffers are zeroed afterwards and stay for timed_batch.
  std::int64_t prepare_and_check(const CollectivePoint& p, int inject_error_rank = -1);
  // Runs `batch` collectives of the prepared point back to back, after a barrier, timed on the device
  // (CUDA events) or by the wall clock (CPU): seconds per collective, averaged over ranks as
  // nccl-tests reports it.
  double timed_batch(int batch);
  void release();   // drops the buffers
  void shutdown();  // the process group; must run before exit

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace ddpbench::ddp
