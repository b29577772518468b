// pty: a pseudo-terminal pair for `corral run --tty`, and its window size.
// openPty() returns both ends O_CLOEXEC; the caller hands the slave to spawn (as stdio, with
// controllingTty) and closes its own copy once the task runs, and reads/writes the master.
// No waits here: every call is one non-blocking system call.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "errors.h"
#include "fd.h"

namespace corral {

namespace {

bool Dimension(const Napi::Value& v, unsigned short* out) {
  if (!v.IsNumber()) return false;
  int64_t n = v.As<Napi::Number>().Int64Value();
  if (n < 0 || n > 0xffff) return false;
  *out = static_cast<unsigned short>(n);
  return true;
}

// openPty(rows, cols): { master, slave, path }
Napi::Value OpenPty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct winsize ws = {};
  if (info.Length() < 2 || !Dimension(info[0], &ws.ws_row) || !Dimension(info[1], &ws.ws_col))
    return ThrowType(env, "openPty(rows, cols): integers in 0..65535");
  UniqueFd master(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master.valid()) return ThrowErrno(env, errno, "posix_openpt", "/dev/ptmx");
  if (grantpt(master.get()) != 0) return ThrowErrno(env, errno, "grantpt");
  if (unlockpt(master.get()) != 0) return ThrowErrno(env, errno, "unlockpt");
  char name[128];
  if (ptsname_r(master.get(), name, sizeof name) != 0) return ThrowErrno(env, errno, "ptsname");
  UniqueFd slave(open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave.valid()) return ThrowErrno(env, errno, "open", name);
  if (ioctl(master.get(), TIOCSWINSZ, &ws) != 0) return ThrowErrno(env, errno, "ioctl", name);
  Napi::Object r = Napi::Object::New(env);
  r.Set("master", Napi::Number::New(env, master.release()));
  r.Set("slave", Napi::Number::New(env, slave.release()));
  r.Set("path", Napi::String::New(env, name));
  return r;
}

// resizePty(masterFd, rows, cols): the kernel sends SIGWINCH to the terminal's foreground group.
Napi::Value ResizePty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct winsize ws = {};
  if (info.Length() < 3 || !info[0].IsNumber() || !Dimension(info[1], &ws.ws_row) || !Dimension(info[2], &ws.ws_col))
    return ThrowType(env, "resizePty(fd, rows, cols)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (ioctl(fd, TIOCSWINSZ, &ws) != 0) return ThrowErrno(env, errno, "ioctl");
  return env.Undefined();
}

}  // namespace

void InitPty(Napi::Env env, Napi::Object exports) {
  exports.Set("openPty", Napi::Function::New(env, OpenPty, "openPty"));
  exports.Set("resizePty", Napi::Function::New(env, ResizePty, "resizePty"));
}

}  // namespace corral
