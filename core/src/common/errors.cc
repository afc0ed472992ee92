#include "prism/errors.h"

#include <cstdio>
#include <string>

#include "prism/internal/ids.h"

namespace prism {

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kOk: return "Ok";
    case ErrorCode::kInvalidArgument: return "InvalidArgument";
    case ErrorCode::kInfeasible: return "Infeasible";
    case ErrorCode::kResourceExhausted: return "ResourceExhausted";
    case ErrorCode::kUnavailable: return "Unavailable";
    case ErrorCode::kCancelled: return "Cancelled";
    case ErrorCode::kDeadlineExceeded: return "DeadlineExceeded";
    case ErrorCode::kTaskFailed: return "TaskFailed";
    case ErrorCode::kInternal: return "Internal";
  }
  return "Unknown";
}

Error::Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

TaskError::TaskError(std::string function_name, std::string type_name, std::string message,
                     std::string node_id, std::exception_ptr cause)
    : Error(ErrorCode::kTaskFailed, "task '" + function_name + "' failed on node " + node_id +
                                        ": " + type_name + ": " + message),
      function_name_(std::move(function_name)),
      type_name_(std::move(type_name)),
      message_(std::move(message)),
      node_id_(std::move(node_id)),
      cause_(std::move(cause)) {}

std::string UniqueId::to_string() const {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%016llx:%llx", static_cast<unsigned long long>(owner),
                static_cast<unsigned long long>(sequence));
  return buf;
}

}  // namespace prism

namespace prism::internal {

void throw_malformed(const char* what) {
  throw Error(ErrorCode::kInvalidArgument, std::string("malformed serialized value: ") + what);
}

}  // namespace prism::internal
