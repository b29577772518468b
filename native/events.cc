// watchEvents: kernel notifications of a cgroup2 `cgroup.events` file (populated / frozen changed),
// delivered on the main loop through a uv_poll_t (POLLPRI, as kernfs signals a change). The group
// waits in src/cgroups/io.ts re-check their condition on each one: a wait holds no thread.
// One owner per fd: the EventsWatch object; closed by close(), or at env teardown.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <uv.h>

#include <unordered_set>
#include <vector>

#include "args.h"
#include "errors.h"

namespace corral {

namespace {

struct Ev;

struct EvEnv {
  Napi::FunctionReference ctor;
  std::unordered_set<Ev*> open;
};

struct Ev {
  uv_poll_t poll;
  EvEnv* eenv = nullptr;
  napi_env env = nullptr;
  int fd = -1;
  bool closing = false;
  int owners = 2;  // uv handle, JS wrapper
  napi_ref callback = nullptr;
  napi_async_context async = nullptr;
  void ReleaseNapi() {
    if (callback != nullptr) napi_delete_reference(env, callback);
    callback = nullptr;
    if (async != nullptr) napi_async_destroy(env, async);
    async = nullptr;
  }
  void Release() {
    if (--owners == 0) delete this;
  }
};

void OnClosed(uv_handle_t* h) {
  Ev* e = static_cast<Ev*>(h->data);
  if (e->fd >= 0) close(e->fd);
  e->fd = -1;
  e->Release();
}

void CloseEv(Ev* e) {
  if (e->closing) return;
  e->closing = true;
  e->ReleaseNapi();
  e->eenv->open.erase(e);
  uv_poll_stop(&e->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&e->poll), OnClosed);
}

void OnEvent(uv_poll_t* h, int status, int /*events*/) {
  Ev* e = static_cast<Ev*>(h->data);
  if (e->closing) return;
  // Reading re-arms kernfs's notification for this open file.
  char buf[256];
  while (pread(e->fd, buf, sizeof buf, 0) < 0 && errno == EINTR) {
  }
  napi_env env = e->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn = nullptr, global, unused, arg;
  napi_get_boolean(env, status == 0, &arg);
  if (e->callback != nullptr) napi_get_reference_value(env, e->callback, &fn);
  napi_get_global(env, &global);
  if (fn != nullptr && e->async != nullptr) {
    napi_status s = napi_make_callback(env, e->async, global, fn, 1, &arg, &unused);
    if (s == napi_pending_exception) {
      napi_value ex;
      if (napi_get_and_clear_last_exception(env, &ex) == napi_ok) napi_fatal_exception(env, ex);
    }
  }
  napi_close_handle_scope(env, scope);
}

class EventsWatch : public Napi::ObjectWrap<EventsWatch> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "EventsWatch",
                       {InstanceMethod<&EventsWatch::Close>("close"), InstanceMethod<&EventsWatch::Ref>("ref"),
                        InstanceMethod<&EventsWatch::Unref>("unref")});
  }
  explicit EventsWatch(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EventsWatch>(info) {
    if (info.Length() < 1 || !info[0].IsExternal()) {
      ThrowType(info.Env(), "EventsWatch is created by watchEvents()");
      return;
    }
    e_ = info[0].As<Napi::External<Ev>>().Data();
  }
  ~EventsWatch() override {
    if (e_ != nullptr) e_->Release();
  }

 private:
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (e_ != nullptr) CloseEv(e_);
    return info.Env().Undefined();
  }
  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (e_ != nullptr && !e_->closing) uv_ref(reinterpret_cast<uv_handle_t*>(&e_->poll));
    return info.Env().Undefined();
  }
  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (e_ != nullptr && !e_->closing) uv_unref(reinterpret_cast<uv_handle_t*>(&e_->poll));
    return info.Env().Undefined();
  }
  Ev* e_ = nullptr;
};

// watchEvents(path, callback(ok: boolean)): EventsWatch
Napi::Value WatchEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EvEnv* ee = static_cast<EvEnv*>(info.Data());
  std::string path;
  if (!StringArg(env, info[0], "watchEvents: path", &path)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsFunction()) return ThrowType(env, "watchEvents(path: string, callback)");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) return ThrowErrno(env, EINVAL, "watchEvents");
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "open", path.c_str());
  char buf[256];
  while (pread(fd, buf, sizeof buf, 0) < 0 && errno == EINTR) {  // arm the notification
  }
  Ev* e = new Ev();
  e->env = env;
  e->fd = fd;
  e->eenv = ee;
  int r = uv_poll_init(loop, &e->poll, fd);
  if (r < 0) {
    close(fd);
    delete e;
    return ThrowErrno(env, -r, "uv_poll_init", path.c_str());
  }
  e->poll.data = e;
  ee->open.insert(e);
  napi_value name;
  napi_create_string_utf8(env, "corral.cgroupEvents", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, info[1], 1, &e->callback);
  napi_async_init(env, nullptr, name, &e->async);
  r = uv_poll_start(&e->poll, UV_PRIORITIZED, OnEvent);
  Napi::Object obj;
  if (r == 0) obj = ee->ctor.New({Napi::External<Ev>::New(env, e)});
  if (r < 0 || env.IsExceptionPending()) {
    e->owners = 1;  // no JS wrapper
    CloseEv(e);
    if (r < 0) return ThrowErrno(env, -r, "uv_poll_start", path.c_str());
    return env.Undefined();
  }
  return obj;
}

void CleanupEvents(void* arg) {
  EvEnv* ee = static_cast<EvEnv*>(arg);
  std::vector<Ev*> open(ee->open.begin(), ee->open.end());
  for (Ev* e : open) CloseEv(e);
  ee->ctor.Reset();
  delete ee;  // closed Evs never follow eenv again
}

}  // namespace

void InitEvents(Napi::Env env, Napi::Object exports) {
  EvEnv* ee = new EvEnv();
  ee->ctor = Napi::Persistent(EventsWatch::Define(env));
  exports.Set("watchEvents", Napi::Function::New(env, WatchEvents, "watchEvents", ee));
  napi_add_env_cleanup_hook(env, CleanupEvents, ee);
}

}  // namespace corral
