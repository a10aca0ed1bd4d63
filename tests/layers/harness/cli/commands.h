// A fixture for the layer check: cli/ may include everything below it.
#pragma once
#include "common/uses_cli.h"
