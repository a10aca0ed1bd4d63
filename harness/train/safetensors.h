// The safetensors format, as Hugging Face checkpoints store weights, so that the built-in trainer and
// the Transformers reference trainer load the very same tensors:
//   8 bytes   little-endian u64 N
//   N bytes   JSON {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
//                   "__metadata__": {string: string}}, padded with spaces to a multiple of 8 bytes
//   then      the byte buffer; offsets are relative to its start, tensors contiguous, no gaps
// Raw bytes only: no LibTorch here, the caller converts (and knows its host is little-endian).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/mapped_file.h"

namespace ddpbench::train::safetensors {

// Bytes per element of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL; UsageError for any other name.
std::size_t dtype_size(const std::string& dtype);

struct TensorData {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  const void* data = nullptr;
  std::size_t bytes = 0;
};

// Writes the tensors in the order given, through path.tmp, fsync and rename, streaming the data so
// that a checkpoint of many GB is never copied in memory. UsageError for a tensor whose bytes do not
// match its shape and dtype, or a repeated name; RunError naming the path for an I/O failure.
void write(const std::string& path, const std::vector<TensorData>& tensors, const std::map<std::string, std::string>& metadata = {});

// A memory-mapped safetensors file. Every check is made at open: UsageError "<path>: <what>".
class File {
 public:
  explicit File(const std::string& path);
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // In the order of their data in the file; data points into the mapping, valid while this lives.
  const std::vector<TensorData>& tensors() const { return tensors_; }
  const TensorData* find(const std::string& name) const;  // nullptr when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  MappedFile map_;  // tensors_ point into it
  std::vector<TensorData> tensors_;
  std::map<std::string, std::size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

}  // namespace ddpbench::train::safetensors
