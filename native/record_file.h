// The task store's record-file primitives (record_file.cc), for callers on other threads too.
#pragma once
#include <string>

#include "errors.h"

namespace corral {

// Writes `text` to a new file `tmp` (O_EXCL, 0600), then link(2)s it to `file` (exclusive: EEXIST,
// syscall 'link', when `file` exists) or renames it over `file`; the temp name never survives.
SysError WriteRecord(const std::string& tmp, const std::string& file, const std::string& text, bool exclusive);

// Appends `text` (one record line) to the existing `file` in one write(2); a short write is cut back.
SysError AppendRecord(const std::string& file, const std::string& text);

}  // namespace corral
