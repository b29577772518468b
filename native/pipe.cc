// pipe(): a pipe for a task's stdio. Both ends O_CLOEXEC (the native spawn dup2s the child's end
// onto 0/1/2, so no other child inherits it); the caller owns both fds.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "errors.h"

namespace corral {

namespace {

// pipe(): [readFd, writeFd]
Napi::Value Pipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return ThrowErrno(env, errno, "pipe2");
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(0u, Napi::Number::New(env, fds[0]));
  a.Set(1u, Napi::Number::New(env, fds[1]));
  return a;
}

}  // namespace

void InitPipe(Napi::Env env, Napi::Object exports) { exports.Set("pipe", Napi::Function::New(env, Pipe, "pipe")); }

}  // namespace corral
