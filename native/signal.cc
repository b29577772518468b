// signalGroup: one signal to every process of a cgroup, each confirmed a member through a pidfd, so
// a pid that was reused between reading cgroup.procs and signalling is never hit.
//   1. read cgroup.procs; 2. pidfd_open each pid (pins the process that holds it now);
//   3. read cgroup.procs again; 4. pidfd_send_signal to each pid listed both times.
// A pid listed at step 3 is held by a group member at that moment; if its pidfd's process died
// meanwhile and the number went to another member, the signal goes to the dead one (ESRCH): never
// to an outsider. The waits that used to run here (groupKill, waitEmpty, waitFrozen) are events on
// the loop now: src/cgroups/io.ts with watchEvents (events.cc).
#include <errno.h>

#include <algorithm>
#include <string>
#include <vector>

#include "args.h"
#include "cgroupfs.h"
#include "errors.h"
#include "fd.h"
#include "pidfd.h"

namespace corral {

namespace {

struct Pinned {
  int32_t pid;
  UniqueFd fd;
};

// signalGroup(procsPath: string, signal: number): { signalled, gone }
Napi::Value SignalGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string procs;
  int64_t sig = 0;
  if (!StringArg(env, info[0], "signalGroup: procsPath", &procs)) return env.Undefined();
  if (!IntArg(env, info[1], "signalGroup: signal", 0, 64, &sig)) return env.Undefined();
  std::vector<int32_t> first, second;
  const char* sc = "";
  int err = ReadPidList(procs.c_str(), &first, &sc);
  if (err != 0) return ThrowErrno(env, err, sc, procs.c_str());
  std::vector<Pinned> pinned;
  pinned.reserve(first.size());
  double gone = 0;
  for (int32_t pid : first) {
    if (pid <= 0) continue;  // never a process group
    int fd = PidfdOpen(pid);
    if (fd < 0) {
      if (errno == ESRCH) {
        gone++;
        continue;
      }
      return ThrowErrno(env, errno, "pidfd_open", procs.c_str());
    }
    pinned.push_back(Pinned{pid, UniqueFd(fd)});
  }
  err = ReadPidList(procs.c_str(), &second, &sc);
  if (err != 0) return ThrowErrno(env, err, sc, procs.c_str());
  std::sort(second.begin(), second.end());
  double signalled = 0;
  int first_err = 0;
  for (Pinned& p : pinned) {
    if (!std::binary_search(second.begin(), second.end(), p.pid)) {
      gone++;  // exited (or moved out) between the reads
      continue;
    }
    if (PidfdSignal(p.fd.get(), static_cast<int>(sig)) == 0)
      signalled++;
    else if (errno == ESRCH)
      gone++;
    else if (first_err == 0)
      first_err = errno;
  }
  // Every member was tried; the first real failure (EPERM) is thrown afterwards.
  if (first_err != 0) return ThrowErrno(env, first_err, "pidfd_send_signal", procs.c_str());
  Napi::Object r = Napi::Object::New(env);
  r.Set("signalled", Napi::Number::New(env, signalled));
  r.Set("gone", Napi::Number::New(env, gone));
  return r;
}

}  // namespace

void InitSignal(Napi::Env env, Napi::Object exports) {
  exports.Set("signalGroup", Napi::Function::New(env, SignalGroup, "signalGroup"));
}

}  // namespace corral
