// What one spawn() asks for: its options parsed strictly at the boundary (a TypeError names the
// first bad field) into strings and vectors owned here, and the ChildCtx that points into them for
// the child (child.cc), which reads them until execve. Nothing here touches a process or the loop;
// spawn.cc runs the request on a thread of its own.
#pragma once
#include <napi.h>
#include <stdint.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "child.h"

namespace corral {

struct SpawnRequest {
  std::string file, cwd, cgroup_dir, oom;
  bool has_cwd = false, has_cg = false, has_oom = false;
  // opts.record: a line appended to record_file once the child exec'd (see spawn.cc).
  std::string record_file, record_text;
  bool has_record = false;
  std::vector<std::string> argv_s, envp_s, joins_s;
  std::vector<char*> argv_p, envp_p;
  std::vector<const char*> joins_p;  // room reserved for the v2 fallback join (no reallocation in the thread)
  std::vector<gid_t> groups;
  ChildCtx ctx = {};
  int64_t timeout_ms = 0;

  // The group an error names: cgroupDir, else the directory of the first joined cgroup.procs.
  std::string Where() const;
  // Is a group the child is about to enter frozen? (*which = that group.) v1: freezer.state beside a
  // joined cgroup.procs (FROZEN or FREEZING; a frozen ancestor shows there too); v2: "frozen 1" in
  // cgroup.events. Cheap reads, done on the spawn thread before cloning.
  bool FrozenGroup(std::string* which) const;
};

// Parses spawn's options object into r; false with a TypeError pending.
bool ParseSpawnOptions(Napi::Env env, const Napi::Object& o, SpawnRequest* r);

}  // namespace corral
