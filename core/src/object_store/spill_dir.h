// spill_dir.h — the directory a process spills values into (DESIGN §8, memory pressure).
//
// Each spiller (an embedded store, the cluster module's object table) gets a fresh directory of
// its own under the spill root: "<root>/<prefix>-<pid>-XXXXXX" made by mkdtemp (0700, a name no
// other process can guess or have made), removed by its owner when it goes. A process killed
// before it could remove its directories leaves them behind: making a new directory first
// removes those of `prefix` whose process is gone.
//
// Thread-safe (no state).
#pragma once

#include <string>

namespace prism::internal {

// PRISM_SPILL_DIR, else $TMPDIR, else /tmp.
std::string spill_root();

// A new directory under `root` (see above); throws prism::Error(kUnavailable) saying why if it
// cannot be made.
std::string make_spill_dir(const std::string& root, const std::string& prefix);

}  // namespace prism::internal
