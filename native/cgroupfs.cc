// Batched control-file writes and reads, cgroup.procs parsing, statfs.
#include "cgroupfs.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <sys/stat.h>

#include "args.h"
#include "errors.h"
#include "fd.h"
#include "record_file.h"

namespace corral {

int WriteOnce(const char* path, const char* data, size_t len, const char** syscall) {
  UniqueFd fd(::open(path, O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) {
    *syscall = "open";
    return errno;
  }
  ssize_t n;
  do {
    n = ::write(fd.get(), data, len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    *syscall = "write";
    return errno;
  }
  if (static_cast<size_t>(n) != len) {
    *syscall = "write";
    return EIO;
  }
  // close() of a cgroup file does not report write errors, but be exact anyway.
  if (::close(fd.release()) < 0 && errno != EINTR) {
    *syscall = "close";
    return errno;
  }
  return 0;
}

int ReadWhole(const char* path, std::string* out, const char** syscall) {
  out->clear();
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    *syscall = "open";
    return errno;
  }
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      *syscall = "read";
      return errno;
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  return 0;
}

int ReadPidList(const char* path, std::vector<int32_t>* out, const char** syscall) {
  out->clear();
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    *syscall = "open";
    return errno;
  }
  char buf[8192];
  int64_t cur = 0;
  bool in_num = false;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      *syscall = "read";
      return errno;
    }
    if (n == 0) break;
    for (ssize_t i = 0; i < n; i++) {
      char c = buf[i];
      if (c >= '0' && c <= '9') {
        cur = cur * 10 + (c - '0');
        in_num = true;
      } else if (in_num) {
        out->push_back(static_cast<int32_t>(cur));
        cur = 0;
        in_num = false;
      }
    }
  }
  if (in_num) out->push_back(static_cast<int32_t>(cur));
  return 0;
}

int ProcsEmpty(const char* path, bool* empty, const char** syscall) {
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    *syscall = "open";
    return errno;
  }
  char buf[64];
  ssize_t n;
  do {
    n = ::read(fd.get(), buf, sizeof buf);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    *syscall = "read";
    return errno;
  }
  *empty = (n == 0);
  return 0;
}

// Copies a JS string into buf (NUL-terminated) when it fits, else into *heap. Returns the C string
// and its length, or nullptr when v is not a string.
static const char* Utf8(napi_env env, napi_value v, char* buf, size_t bufsize, std::string* heap, size_t* len) {
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &n) != napi_ok) return nullptr;
  if (n < bufsize) {
    napi_get_value_string_utf8(env, v, buf, bufsize, len);
    return buf;
  }
  heap->resize(n + 1);
  napi_get_value_string_utf8(env, v, &(*heap)[0], n + 1, len);
  return heap->c_str();
}

static std::string StringArg(const Napi::Value& v) { return v.As<Napi::String>().Utf8Value(); }

// writeFiles(paths: string[], values: string[]): (NativeErrorInfo | null)[]
static Napi::Value WriteFiles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsArray())
    return ThrowType(env, "writeFiles(paths: string[], values: string[])");
  Napi::Array paths = info[0].As<Napi::Array>();
  Napi::Array values = info[1].As<Napi::Array>();
  uint32_t n = paths.Length();
  if (values.Length() != n) return ThrowType(env, "writeFiles: paths and values differ in length");
  if (n > kMaxList) return ThrowType(env, "writeFiles: too many paths");
  Napi::Array result = Napi::Array::New(env, n);
  napi_value null_v = env.Null();
  char pbuf[4096 + 1];
  char vbuf[4096];
  std::string pheap, vheap;
  for (uint32_t i = 0; i < n; i++) {
    napi_value pv, vv;
    if (napi_get_element(env, paths, i, &pv) != napi_ok || napi_get_element(env, values, i, &vv) != napi_ok)
      return env.Undefined();
    size_t plen = 0, vlen = 0;
    const char* p = Utf8(env, pv, pbuf, sizeof pbuf, &pheap, &plen);
    const char* v = Utf8(env, vv, vbuf, sizeof vbuf, &vheap, &vlen);
    if (p == nullptr || v == nullptr) return ThrowType(env, "writeFiles: every path and value must be a string");
    const char* sc = "";
    int err = WriteOnce(p, v, vlen, &sc);
    napi_value item = err == 0 ? null_v : static_cast<napi_value>(MakeErrorInfo(env, err, sc, p));
    if (napi_set_element(env, result, i, item) != napi_ok) return env.Undefined();
  }
  return result;
}

// readFiles(paths: string[]): (string | NativeErrorInfo)[]
static Napi::Value ReadFiles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) return ThrowType(env, "readFiles(paths: string[])");
  Napi::Array paths = info[0].As<Napi::Array>();
  uint32_t n = paths.Length();
  if (n > kMaxList) return ThrowType(env, "readFiles: too many paths");
  Napi::Array result = Napi::Array::New(env, n);
  std::string text;
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value pv = paths[i];
    if (!pv.IsString()) return ThrowType(env, "readFiles: every path must be a string");
    std::string p = StringArg(pv);
    const char* sc = "";
    int err = ReadWhole(p.c_str(), &text, &sc);
    if (err == 0)
      result[i] = Napi::String::New(env, text);
    else
      result[i] = MakeErrorInfo(env, err, sc, p.c_str());
  }
  return result;
}

// readProcs(procsPath: string): Int32Array
static Napi::Value ReadProcs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return ThrowType(env, "readProcs(procsPath: string)");
  std::string p = StringArg(info[0]);
  std::vector<int32_t> pids;
  const char* sc = "";
  int err = ReadPidList(p.c_str(), &pids, &sc);
  if (err != 0) return ThrowErrno(env, err, sc, p.c_str());
  Napi::Int32Array arr = Napi::Int32Array::New(env, pids.size());
  for (size_t i = 0; i < pids.size(); i++) arr[i] = pids[i];
  return arr;
}

// statfsType(path: string): number
static Napi::Value StatfsType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return ThrowType(env, "statfsType(path: string)");
  std::string p = StringArg(info[0]);
  struct statfs st;
  if (::statfs(p.c_str(), &st) < 0) return ThrowErrno(env, errno, "statfs", p.c_str());
  return Napi::Number::New(env, static_cast<double>(static_cast<unsigned long>(st.f_type)));
}


// One step of applyAsync.
struct FsOp {
  enum Kind { kMkdir, kWrite, kRmdir, kAbsent, kCreate, kUnlink } kind;
  std::string path, value, tmp;
};

// Runs a list of steps (mkdir, write, rmdir, absent, create, unlink) in order on the libuv pool: short work
// that never waits for a condition, but whose syscalls can stall (cgroup creation takes locks the
// kernel shares with every other cgroup operation on the host). Stops at the first failure.
// `absent` fails with EEXIST when the path exists: a group's creation checks that none of its name
// exists elsewhere in the same job as its mkdirs, instead of one pool hop per lookup before it.
// `create` puts a whole new file in place exclusively (record_file.cc's WriteRecord: a temp file,
// then link; EEXIST from link when it exists): a task's write-ahead record, in the same job as, and
// before, its group's mkdirs. `unlink` removes a file (one already gone counts as removed): the
// task's record, in the same job as, and after, its group's last rmdir.
class ApplyWorker : public Napi::AsyncWorker {
 public:
  ApplyWorker(Napi::Function cb, std::vector<FsOp> ops) : Napi::AsyncWorker(cb, "corral.applyAsync"), ops_(std::move(ops)) {}
  void Execute() override {
    for (size_t i = 0; i < ops_.size(); i++) {
      const FsOp& op = ops_[i];
      const char* sc = "";
      int err = 0;
      if (op.kind == FsOp::kWrite) {
        err = WriteOnce(op.path.c_str(), op.value.data(), op.value.size(), &sc);
      } else if (op.kind == FsOp::kMkdir) {
        if (::mkdir(op.path.c_str(), 0755) < 0) err = errno, sc = "mkdir";
      } else if (op.kind == FsOp::kCreate) {
        SysError e = WriteRecord(op.tmp, op.path, op.value, true);
        if (e) {
          failed_ = static_cast<int64_t>(i);
          err_ = e;
          return;
        }
      } else if (op.kind == FsOp::kUnlink) {
        if (::unlink(op.path.c_str()) < 0 && errno != ENOENT) err = errno, sc = "unlink";
      } else if (op.kind == FsOp::kAbsent) {
        struct stat st;
        if (::stat(op.path.c_str(), &st) == 0) err = EEXIST, sc = "stat";
      } else if (::rmdir(op.path.c_str()) < 0) {
        err = errno, sc = "rmdir";
      }
      if (err != 0) {
        failed_ = static_cast<int64_t>(i);
        err_.set(err, sc, op.path);
        return;
      }
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (err_) {
      Napi::Error e = MakeError(env, err_);
      e.Set("index", Napi::Number::New(env, static_cast<double>(failed_)));
      Callback().Call({e.Value()});
    } else {
      Callback().Call({env.Null()});
    }
  }

 private:
  std::vector<FsOp> ops_;
  int64_t failed_ = -1;
  SysError err_;
};

// applyAsync(ops: [op: 'mkdir' | 'write' | 'rmdir' | 'absent' | 'create' | 'unlink', path: string, value?: string, tmp?: string][], callback(err | null))
static Napi::Value ApplyAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsFunction())
    return ThrowType(env, "applyAsync(ops: [op, path, value?][], callback)");
  Napi::Array a = info[0].As<Napi::Array>();
  uint32_t n = a.Length();
  if (n > kMaxList) return ThrowType(env, "applyAsync: too many ops");
  std::vector<FsOp> ops;
  ops.reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsArray()) return ThrowType(env, "applyAsync: each op must be [op, path, value?]");
    Napi::Array t = e.As<Napi::Array>();
    std::string kind;
    FsOp op;
    if (!StringArg(env, t.Get(0u), "applyAsync: op", &kind)) return env.Undefined();
    if (!StringArg(env, t.Get(1u), "applyAsync: path", &op.path)) return env.Undefined();
    if (kind == "mkdir") {
      op.kind = FsOp::kMkdir;
    } else if (kind == "rmdir") {
      op.kind = FsOp::kRmdir;
    } else if (kind == "absent") {
      op.kind = FsOp::kAbsent;
    } else if (kind == "unlink") {
      op.kind = FsOp::kUnlink;
    } else if (kind == "create") {
      op.kind = FsOp::kCreate;
      if (!StringArg(env, t.Get(2u), "applyAsync: value", &op.value)) return env.Undefined();
      if (!StringArg(env, t.Get(3u), "applyAsync: tmp", &op.tmp)) return env.Undefined();
      if (op.tmp.empty() || op.path.empty()) return ThrowType(env, "applyAsync: create needs a path and a temp path");
    } else if (kind == "write") {
      op.kind = FsOp::kWrite;
      if (!StringArg(env, t.Get(2u), "applyAsync: value", &op.value)) return env.Undefined();
    } else {
      return ThrowType(env, "applyAsync: op must be 'mkdir', 'write', 'rmdir', 'absent', 'create' or 'unlink'");
    }
    ops.push_back(std::move(op));
  }
  auto* w = new ApplyWorker(info[1].As<Napi::Function>(), std::move(ops));
  w->Queue();
  return env.Undefined();
}

void InitCgroupfs(Napi::Env env, Napi::Object exports) {
  exports.Set("applyAsync", Napi::Function::New(env, ApplyAsync, "applyAsync"));
  exports.Set("writeFiles", Napi::Function::New(env, WriteFiles, "writeFiles"));
  exports.Set("readFiles", Napi::Function::New(env, ReadFiles, "readFiles"));
  exports.Set("readProcs", Napi::Function::New(env, ReadProcs, "readProcs"));
  exports.Set("statfsType", Napi::Function::New(env, StatfsType, "statfsType"));
}

}  // namespace corral
