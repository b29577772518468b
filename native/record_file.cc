// writeRecordAsync: a small file put in place atomically, in one libuv pool job.
//
// Why native: the task store writes a record on every start (create, then replace) and removes it on
// destroy. Through fs.promises each write is open, write, close, link or rename and an unlink: five
// or six pool hops, each a thread wake-up and a loop turn, and on an idle machine those hops were
// 39% of a whole start→wait→destroy. Here it is one hop. No policy: the caller names the temp file.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "args.h"
#include "errors.h"
#include "fd.h"

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

class RecordWorker : public Napi::AsyncWorker {
 public:
  RecordWorker(Napi::Function cb, std::string tmp, std::string file, std::string text, bool exclusive)
      : Napi::AsyncWorker(cb, "corral.writeRecordAsync"), tmp_(std::move(tmp)), file_(std::move(file)),
        text_(std::move(text)), exclusive_(exclusive) {}

  void Execute() override {
    const char* sc = "";
    int err = WriteNew(tmp_, text_, &sc);
    if (err != 0) return err_.set(err, sc, tmp_);
    if (exclusive_) {
      // link(2) fails with EEXIST when the record exists: creation is exclusive. The temp name goes either way.
      if (::link(tmp_.c_str(), file_.c_str()) < 0) err_.set(errno, "link", file_);
      ::unlink(tmp_.c_str());
    } else if (::rename(tmp_.c_str(), file_.c_str()) < 0) {
      err_.set(errno, "rename", file_);
      ::unlink(tmp_.c_str());
    }
  }

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

// writeRecordAsync(tmp, file, text, exclusive, callback(err | null))
Napi::Value WriteRecordAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[3].IsBoolean() || !info[4].IsFunction()) {
    return ThrowType(env, "writeRecordAsync(tmp: string, file: string, text: string, exclusive: boolean, callback)");
  }
  std::string tmp, file, text;
  if (!StringArg(env, info[0], "writeRecordAsync: tmp", &tmp)) return env.Undefined();
  if (!StringArg(env, info[1], "writeRecordAsync: file", &file)) return env.Undefined();
  if (!StringArg(env, info[2], "writeRecordAsync: text", &text)) return env.Undefined();
  auto* w = new RecordWorker(info[4].As<Napi::Function>(), std::move(tmp), std::move(file), std::move(text),
                             info[3].As<Napi::Boolean>().Value());
  w->Queue();
  return env.Undefined();
}

}  // namespace

void InitRecordFile(Napi::Env env, Napi::Object exports) {
  exports.Set("writeRecordAsync", Napi::Function::New(env, WriteRecordAsync, "writeRecordAsync"));
}

}  // namespace corral
