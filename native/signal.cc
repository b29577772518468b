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
#include "signal.h"

namespace corral {

namespace {

struct Pinned {
  int32_t pid;
  UniqueFd fd;
};

}  // namespace

SignalOutcome SignalMembers(const std::string& procs, int sig) {
  SignalOutcome out;
  std::vector<int32_t> first, second;
  const char* sc = "";
  int err = ReadPidList(procs.c_str(), &first, &sc);
  if (err != 0) {
    out.err.set(err, sc, procs);
    return out;
  }
  std::vector<Pinned> pinned;
  pinned.reserve(first.size());
  for (int32_t pid : first) {
    if (pid <= 0) continue;  // never a process group
    int fd = PidfdOpen(pid);
    if (fd < 0) {
      if (errno == ESRCH) {
        out.gone++;
        continue;
      }
      out.err.set(errno, "pidfd_open", procs);
      return out;
    }
    pinned.push_back(Pinned{pid, UniqueFd(fd)});
  }
  err = ReadPidList(procs.c_str(), &second, &sc);
  if (err != 0) {
    out.err.set(err, sc, procs);
    return out;
  }
  std::sort(second.begin(), second.end());
  int first_err = 0;
  for (Pinned& p : pinned) {
    if (!std::binary_search(second.begin(), second.end(), p.pid)) {
      out.gone++;  // exited (or moved out) between the reads
      continue;
    }
    if (PidfdSignal(p.fd.get(), sig) == 0)
      out.signalled++;
    else if (errno == ESRCH)
      out.gone++;
    else if (first_err == 0)
      first_err = errno;
  }
  // Every member was tried; the first real failure (EPERM) is reported afterwards.
  if (first_err != 0) out.err.set(first_err, "pidfd_send_signal", procs);
  return out;
}

namespace {

Napi::Object OutcomeObject(Napi::Env env, const SignalOutcome& o) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("signalled", Napi::Number::New(env, o.signalled));
  r.Set("gone", Napi::Number::New(env, o.gone));
  return r;
}

// signalGroup(procsPath: string, signal: number): { signalled, gone }
Napi::Value SignalGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string procs;
  int64_t sig = 0;
  if (!StringArg(env, info[0], "signalGroup: procsPath", &procs)) return env.Undefined();
  if (!IntArg(env, info[1], "signalGroup: signal", 0, 64, &sig)) return env.Undefined();
  SignalOutcome o = SignalMembers(procs, static_cast<int>(sig));
  if (o.err) return ThrowErrno(env, o.err.err, o.err.syscall, o.err.path.c_str());
  return OutcomeObject(env, o);
}

}  // namespace

void InitSignal(Napi::Env env, Napi::Object exports) {
  exports.Set("signalGroup", Napi::Function::New(env, SignalGroup, "signalGroup"));
}

}  // namespace corral
