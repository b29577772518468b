// Signalling every member of a cgroup, each confirmed through a pidfd (signal.cc).
#pragma once
#include <string>

#include "errors.h"

namespace corral {

struct SignalOutcome {
  double signalled = 0;
  double gone = 0;
  SysError err;
};

// The whole confirm-then-signal sequence. No N-API: it runs on the loop or on a thread of ours.
SignalOutcome SignalMembers(const std::string& procs, int sig);

}  // namespace corral
