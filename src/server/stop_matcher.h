// The server's name for the executor's stop-string matcher (executor/stop_matcher.h): stop
// strings are matched in the executor now; the server keeps the name for its callers and tests.
#pragma once

#include "executor/stop_matcher.h"

namespace anvil::server {

using StopMatcher = anvil::StopMatcher;

}  // namespace anvil::server
