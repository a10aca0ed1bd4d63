// A fixture for the layer check (cmake/check_layers.cmake): common/ reaching up into cli/ must fail.
#pragma once
#include "cli/commands.h"
#include "common/error.h"
