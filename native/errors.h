// errno -> Node-style errors, in one place.
// A thrown error is an Error with `code` ('ENOENT'), `errno` (negative, as libuv), `syscall`,
// optional `path`, and a message like Node's: "ENOENT: no such file or directory, open '/x'".
// Batch items get the same fields as a plain object (NativeErrorInfo).
#pragma once
#include <napi.h>

#include <string>

namespace corral {

// A failed system call, captured off the main thread and turned into JS later.
struct SysError {
  int err = 0;               // positive errno; 0 = no error
  const char* syscall = "";  // static string
  std::string path;          // may be empty (no `path` property then)
  std::string detail;        // replaces the strerror text in the message when set

  void set(int e, const char* sc, const std::string& p) {
    err = e;
    syscall = sc;
    path = p;
    detail.clear();
  }
  explicit operator bool() const { return err != 0; }
};

// 'ENOENT' for 2, etc. Never fails: unknown numbers give "E<n>" style names from glibc or libuv.
std::string ErrnoName(int err);

// Error object (not thrown) for errno `err` (positive).
Napi::Error MakeError(Napi::Env env, int err, const char* syscall, const char* path);
Napi::Error MakeError(Napi::Env env, const SysError& e);

// Plain object { code, errno, syscall, path?, message } for batch results.
Napi::Object MakeErrorInfo(Napi::Env env, int err, const char* syscall, const char* path);

// Throws (sets the pending exception) and returns undefined; use as `return ThrowErrno(...)`.
Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall, const char* path = nullptr);

// TypeError for bad arguments.
Napi::Value ThrowType(Napi::Env env, const char* message);

// Error with code 'ENOSYS' for exports not implemented yet.
Napi::Value NotImplemented(const Napi::CallbackInfo& info);

}  // namespace corral
