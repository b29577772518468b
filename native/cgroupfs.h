// Small, allocation-light file helpers shared by cgroupfs.cc and signal.cc.
// All return 0 on success or a positive errno, and name the failing syscall in *syscall.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <string>
#include <vector>

namespace corral {

// open(O_WRONLY|O_CLOEXEC), one write(), close. A short write is EIO.
int WriteOnce(const char* path, const char* data, size_t len, const char** syscall);

// Reads a whole (pseudo-)file into *out (replacing its contents).
int ReadWhole(const char* path, std::string* out, const char** syscall);

// Parses a cgroup.procs / tasks file into *out (replacing its contents).
int ReadPidList(const char* path, std::vector<int32_t>* out, const char** syscall);

// Same, but only answers "is it empty?" (reads at most one small chunk).
int ProcsEmpty(const char* path, bool* empty, const char** syscall);

}  // namespace corral
