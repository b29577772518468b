// writeRecord / writeRecordAsync: a small file put in place atomically (temp file, then link or
// rename), on the calling thread or in one libuv pool job; the task store's one way to write.
//
// Why native: the task store writes a record on every start (create, then replace) and removes it on
// destroy. Through fs.promises each write is open, write, close, link or rename and an unlink: five
// or six pool hops, each a thread wake-up and a loop turn, and on an idle machine those hops were
// 39% of a whole start→wait→destroy. Here it is one hop. No policy: the caller names the temp file.
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "args.h"
#include "errors.h"
#include "fd.h"
#include "record_file.h"

namespace corral {
namespace {

// Writes `text` to a new file `tmp` (O_EXCL, mode 0600). On failure the partial file is removed.
int WriteNew(const std::string& tmp, const std::string& text, const char** sc) {
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    *sc = "open";
    return errno;
  }
  int err = 0;
  for (size_t off = 0; off < text.size();) {
    ssize_t n = ::write(fd.get(), text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      *sc = "write";
      break;
    }
    off += static_cast<size_t>(n);
  }
  // ENOSPC and EDQUOT can surface at close on some filesystems.
  if (::close(fd.release()) < 0 && err == 0 && errno != EINTR) {
    err = errno;
    *sc = "close";
  }
  if (err != 0) ::unlink(tmp.c_str());
  return err;
}

}  // namespace

// The temp file, then link(2) (exclusive: EEXIST when the record exists) or rename(2) over it.
// The temp name goes either way.
SysError WriteRecord(const std::string& tmp, const std::string& file, const std::string& text, bool exclusive) {
  SysError e;
  const char* sc = "";
  int err = WriteNew(tmp, text, &sc);
  if (err != 0) {
    e.set(err, sc, tmp);
    return e;
  }
  if (exclusive) {
    if (::link(tmp.c_str(), file.c_str()) < 0) e.set(errno, "link", file);
    ::unlink(tmp.c_str());
  } else if (::rename(tmp.c_str(), file.c_str()) < 0) {
    e.set(errno, "rename", file);
    ::unlink(tmp.c_str());
  }
  return e;
}

// Appends `text` (one record line) to the existing `file` in one write(2): no truncation and no
// rename over the file, so ext4 does not start writeback of it (auto_da_alloc does on both, ~1 ms).
// A reader sees the line whole or not at all as a complete line: i_size grows only after the copy,
// so what it may see early is a prefix without its newline, which record readers skip. A short
// write (ENOSPC mid-way) is cut off again, leaving the file as it was.
SysError AppendRecord(const std::string& file, const std::string& text) {
  SysError e;
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  if (!fd.valid()) {
    e.set(errno, "open", file);
    return e;
  }
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) {
    e.set(errno, "fstat", file);
    return e;
  }
  ssize_t n;
  do {
    n = ::write(fd.get(), text.data(), text.size());
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(text.size())) {
    e.set(n < 0 ? errno : ENOSPC, "write", file);
    if (n > 0 && ::ftruncate(fd.get(), st.st_size) < 0) e.detail = "short write, and the file could not be cut back";
    return e;
  }
  if (::close(fd.release()) < 0 && errno != EINTR) e.set(errno, "close", file);
  return e;
}

namespace {

class RecordWorker : public Napi::AsyncWorker {
 public:
  // tmp empty: append to `file`.
  RecordWorker(Napi::Function cb, std::string tmp, std::string file, std::string text, bool exclusive)
      : Napi::AsyncWorker(cb, "corral.writeRecordAsync"), tmp_(std::move(tmp)), file_(std::move(file)),
        text_(std::move(text)), exclusive_(exclusive) {}

  void Execute() override { err_ = tmp_.empty() ? AppendRecord(file_, text_) : WriteRecord(tmp_, file_, text_, exclusive_); }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Callback().Call({err_ ? MakeError(env, err_).Value() : env.Null()});
  }

 private:
  std::string tmp_, file_, text_;
  bool exclusive_;
  SysError err_;
};

bool RecordArgs(const Napi::CallbackInfo& info, const char* name, std::string* tmp, std::string* file, std::string* text) {
  Napi::Env env = info.Env();
  std::string w = name;
  return StringArg(env, info[0], (w + ": tmp").c_str(), tmp) && StringArg(env, info[1], (w + ": file").c_str(), file) &&
         StringArg(env, info[2], (w + ": text").c_str(), text);
}

// writeRecordAsync(tmp, file, text, exclusive, callback(err | null))
Napi::Value WriteRecordAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[3].IsBoolean() || !info[4].IsFunction()) {
    return ThrowType(env, "writeRecordAsync(tmp: string, file: string, text: string, exclusive: boolean, callback)");
  }
  std::string tmp, file, text;
  if (!RecordArgs(info, "writeRecordAsync", &tmp, &file, &text)) return env.Undefined();
  auto* w = new RecordWorker(info[4].As<Napi::Function>(), std::move(tmp), std::move(file), std::move(text),
                             info[3].As<Napi::Boolean>().Value());
  w->Queue();
  return env.Undefined();
}

// writeRecord(tmp, file, text, exclusive): undefined, or throws the failing step's error.
Napi::Value WriteRecordSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[3].IsBoolean()) return ThrowType(env, "writeRecord(tmp: string, file: string, text: string, exclusive: boolean)");
  std::string tmp, file, text;
  if (!RecordArgs(info, "writeRecord", &tmp, &file, &text)) return env.Undefined();
  SysError e = WriteRecord(tmp, file, text, info[3].As<Napi::Boolean>().Value());
  if (e) return ThrowErrno(env, e.err, e.syscall, e.path.c_str());
  return env.Undefined();
}

// appendRecordAsync(file, text, callback(err | null))
Napi::Value AppendRecordAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[2].IsFunction()) return ThrowType(env, "appendRecordAsync(file: string, text: string, callback)");
  std::string file, text;
  if (!StringArg(env, info[0], "appendRecordAsync: file", &file)) return env.Undefined();
  if (!StringArg(env, info[1], "appendRecordAsync: text", &text)) return env.Undefined();
  if (file.empty()) return ThrowType(env, "appendRecordAsync: file must not be empty");
  auto* w = new RecordWorker(info[2].As<Napi::Function>(), std::string(), std::move(file), std::move(text), false);
  w->Queue();
  return env.Undefined();
}

}  // namespace

void InitRecordFile(Napi::Env env, Napi::Object exports) {
  exports.Set("writeRecordAsync", Napi::Function::New(env, WriteRecordAsync, "writeRecordAsync"));
  exports.Set("writeRecord", Napi::Function::New(env, WriteRecordSync, "writeRecord"));
  exports.Set("appendRecordAsync", Napi::Function::New(env, AppendRecordAsync, "appendRecordAsync"));
}

}  // namespace corral
