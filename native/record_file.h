// The task store's record-file primitives (record_file.cc), for callers on other threads too.
#pragma once
#include <string>

#include "errors.h"

namespace corral {

// Appends `text` (one record line) to the existing `file` in one write(2); a short write is cut back.
SysError AppendRecord(const std::string& file, const std::string& text);

}  // namespace corral
