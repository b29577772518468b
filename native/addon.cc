// Module init: registers every export declared by NativeAddon in src/native.ts.
// One Init per concern (one .cc each); a new concern is one declaration and one call.
#include <dlfcn.h>
#include <napi.h>

namespace corral {
void InitCgroupfs(Napi::Env env, Napi::Object exports);
void InitSignal(Napi::Env env, Napi::Object exports);
void InitEvents(Napi::Env env, Napi::Object exports);
void* InitPidfd(Napi::Env env, Napi::Object exports);
void InitSpawn(Napi::Env env, Napi::Object exports, void* proc_env);
void InitUsers(Napi::Env env, Napi::Object exports);
void InitPipe(Napi::Env env, Napi::Object exports);
void InitFlock(Napi::Env env, Napi::Object exports);
void InitPty(Napi::Env env, Napi::Object exports);
void InitRecordFile(Napi::Env env, Napi::Object exports);
void InitControl(Napi::Env env, Napi::Object exports);
}  // namespace corral

// Pins this shared object in memory: a worker thread's env may be torn down (and the addon
// dlclose'd) while libuv still has close callbacks of ours to run, and spawn threads may outlive it.
static void PinSelf() {
  static bool pinned = false;
  if (pinned) return;
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&PinSelf), &info) != 0 && info.dli_fname != nullptr) {
    if (dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE) != nullptr) pinned = true;
  }
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  PinSelf();
  corral::InitCgroupfs(env, exports);
  corral::InitSignal(env, exports);
  corral::InitEvents(env, exports);
  void* procs = corral::InitPidfd(env, exports);  // ProcessHandle, which spawn hands its children to
  corral::InitSpawn(env, exports, procs);
  corral::InitUsers(env, exports);
  corral::InitPipe(env, exports);
  corral::InitFlock(env, exports);
  corral::InitPty(env, exports);
  corral::InitRecordFile(env, exports);
  corral::InitControl(env, exports);
  return exports;
}

NODE_API_MODULE(corral, Init)
