// flock(2) without waiting: the cross-process lock of the cpuset partition (src/cgroups/lock.ts).
// The fd belongs to the caller (Node's fs); the lock lives on its open file description and the
// kernel drops it when that is closed or the holder dies, so a killed holder never wedges the next.
#include <errno.h>
#include <sys/file.h>

#include "errors.h"

namespace corral {

// flockTry(fd, exclusive): true when the lock was taken, false when another description holds it.
static Napi::Value FlockTry(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsBoolean()) {
    return ThrowType(env, "flockTry(fd: number, exclusive: boolean)");
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) return ThrowErrno(env, EBADF, "flock");
  int op = (info[1].As<Napi::Boolean>().Value() ? LOCK_EX : LOCK_SH) | LOCK_NB;
  int r;
  do {
    r = ::flock(fd, op);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  return ThrowErrno(env, errno, "flock");
}

void InitFlock(Napi::Env env, Napi::Object exports) {
  exports.Set("flockTry", Napi::Function::New(env, FlockTry, "flockTry"));
}

}  // namespace corral
