// watchEvents: kernel notifications of a cgroup2 `cgroup.events` file (populated / frozen changed),
// delivered on the main loop through a uv_poll_t (POLLPRI, as kernfs signals a change). The group
// waits in src/cgroups/waits.ts re-check their condition on each one: a wait holds no thread.
// One owner per fd: the EventsWatch (pollwatch.h: lifetime, teardown).
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "args.h"
#include "errors.h"
#include "pollwatch.h"

namespace corral {

namespace {

// Reading re-arms kernfs's notification for this open file.
void Rearm(int fd) {
  char buf[256];
  while (pread(fd, buf, sizeof buf, 0) < 0 && errno == EINTR) {
  }
}

void OnEvent(uv_poll_t* h, int status, int /*events*/) {
  PollWatch* e = static_cast<PollWatch*>(h->data);
  if (e->closing) return;
  Rearm(e->fd);
  napi_env env = e->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value arg;
  napi_get_boolean(env, status == 0, &arg);
  e->cb.Call(env, 1, &arg, false);
  napi_close_handle_scope(env, scope);
}

class EventsWatch : public WatchWrap<EventsWatch, PollWatch> {
 public:
  static constexpr const char* kCreatedBy = "EventsWatch is created by watchEvents()";
  static Napi::Function Define(Napi::Env env) { return DefineClass(env, "EventsWatch", Methods({})); }
  using WatchWrap::WatchWrap;
};

// watchEvents(path, callback(ok: boolean)): EventsWatch
Napi::Value WatchEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  WatchSet* set = static_cast<WatchSet*>(info.Data());
  std::string path;
  if (!StringArg(env, info[0], "watchEvents: path", &path)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsFunction()) return ThrowType(env, "watchEvents(path: string, callback)");
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "open", path.c_str());
  Rearm(fd);  // arm the notification
  PollWatch* e = new PollWatch();
  Napi::Value obj = set->Adopt(env, e, fd);  // e and fd are owned by the watch from here on
  if (env.IsExceptionPending()) return env.Undefined();
  int r = e->cb.Hold(env, info[1], "corral.cgroupEvents") ? uv_poll_start(&e->poll, UV_PRIORITIZED, OnEvent) : UV_ENOMEM;
  if (r < 0) {
    e->Close();
    return ThrowErrno(env, -r, "uv_poll_start", path.c_str());
  }
  return obj;
}

}  // namespace

void InitEvents(Napi::Env env, Napi::Object exports) {
  WatchSet* set = WatchSet::Create(env, EventsWatch::Define(env));
  exports.Set("watchEvents", Napi::Function::New(env, WatchEvents, "watchEvents", set));
}

}  // namespace corral
