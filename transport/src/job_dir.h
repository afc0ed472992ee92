// job_dir.h — a cluster job's files: the driver's address and the job's token.
//
//   $PRISM_JOB_DIR, or <temp>/prism/job-<date>-<pid>/ with <temp>/prism/latest -> it
//     address   "host:port" the driver listens on
//     token     64 hex characters, mode 0600
//
// Nodes read the token from PRISM_TOKEN_FILE, else from the latest job's directory, as
// `prism status` does (DESIGN §2).
//
// Thread-safe: plain functions over the file system.
#pragma once

#include <string>

namespace prism::cluster {

// <temp>/prism, where <temp> is $TMPDIR or /tmp.
std::string jobs_root();
// Creates the job's directory (`dir`, or a new one under jobs_root() with the `latest` link
// pointing to it), writes `address` and `token` (0600). Returns the directory. Throws
// prism::Error(kUnavailable) naming the path on any failure.
std::string write_job_dir(const std::string& dir, const std::string& address,
                          const std::string& token);
// Reads a token file: one line of hex characters. Throws prism::Error(kInvalidArgument) naming
// the file if it is missing, unreadable or not a token, or readable by others than its owner.
std::string read_token_file(const std::string& path);
// The file's first line, trimmed; throws prism::Error(kInvalidArgument) naming it if missing.
std::string read_line_file(const std::string& path);

}  // namespace prism::cluster
