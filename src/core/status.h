// Status and Result<T> are part of the public API (include/anvil/status.h); this header keeps
// the internal include path short.
#pragma once

#include "anvil/status.h"
