// Precompiled header of the LibTorch translation units: parsing ATen and c10d once instead of per
// file is most of what keeps a clean build inside CI's budget on two cores.
#pragma once
#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
