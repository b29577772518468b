#include "pollwatch.h"

#include <errno.h>
#include <unistd.h>

namespace corral {

namespace {

void OnClosed(uv_handle_t* h) {
  PollWatch* w = static_cast<PollWatch*>(h->data);
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
  w->Release();
}

// The env is going away (worker thread exit, process teardown): every open watch is closed now,
// while the env is alive (its napi state released); the fds close in the close callbacks.
void CleanupSet(void* arg) {
  WatchSet* set = static_cast<WatchSet*>(arg);
  set->gone = true;
  std::vector<PollWatch*> open(set->open.begin(), set->open.end());
  for (PollWatch* w : open) w->TearDown();
  set->ctor.Reset();
  delete set;  // every watch has left `open` and is closing: none follows `set` again
}

}  // namespace

void PollWatch::Close() {
  if (closing) return;
  closing = true;
  cb.Release(env);
  if (set != nullptr) set->open.erase(this);
  uv_poll_stop(&poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&poll), OnClosed);
}

WatchSet* WatchSet::Create(Napi::Env env, Napi::Function ctor) {
  WatchSet* set = new WatchSet();
  set->ctor = Napi::Persistent(ctor);
  napi_add_env_cleanup_hook(env, CleanupSet, set);
  return set;
}

Napi::Value WatchSet::Adopt(Napi::Env env, PollWatch* w, int fd) {
  uv_loop_t* loop = nullptr;
  int r = gone || napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr ? UV_EINVAL : uv_poll_init(loop, &w->poll, fd);
  if (r < 0) {
    close(fd);
    delete w;
    return ThrowErrno(env, -r, "uv_poll_init");
  }
  w->env = env;
  w->fd = fd;
  w->poll.data = w;
  w->set = this;
  open.insert(w);
  Napi::Object obj = ctor.New({Napi::External<PollWatch>::New(env, w)});
  if (env.IsExceptionPending()) {
    w->owners = 1;  // no JS wrapper exists
    w->Close();
    return env.Undefined();
  }
  return obj;
}

}  // namespace corral
