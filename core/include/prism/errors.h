// prism/errors.h — the exceptions Prism's user API throws.
//
// Every error Prism reports is a prism::Error (a std::runtime_error) with a code() that says
// what the caller should do next. The subclasses name the common cases so that callers can
// catch exactly what they handle:
//
//   try {
//     int v = prism::get(ref, std::chrono::seconds(1));
//   } catch (const prism::TimeoutError&) {        // not ready yet: try again later
//   } catch (const prism::TaskError& e) {         // the task threw
//     std::cerr << e.function_name() << " threw " << e.type_name() << ": " << e.message();
//   }
//
// Thread-safe: these are immutable value types.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>

namespace prism {

// What the caller should do next. Kept small on purpose (see STYLE.md, "Errors").
enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,    // wrong API use: fix the call
  kInfeasible,         // no node can ever satisfy the request: never retry
  kResourceExhausted,  // full right now (object store): retry later
  kUnavailable,        // a peer, actor or the runtime is gone
  kCancelled,          // cancelled by prism::cancel or by shutdown
  kDeadlineExceeded,   // a timeout passed before the result was ready
  kTaskFailed,         // user code threw
  kInternal,           // a bug in Prism
};

const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// A task (or actor method) threw. Carries the function's registered name (or the name given
// with .name()), the original exception's type and message, and the node it ran on. In
// embedded mode cause() also holds the original exception itself.
class TaskError : public Error {
 public:
  TaskError(std::string function_name, std::string type_name, std::string message,
            std::string node_id, std::exception_ptr cause = nullptr);

  const std::string& function_name() const noexcept { return function_name_; }
  const std::string& type_name() const noexcept { return type_name_; }
  const std::string& message() const noexcept { return message_; }
  const std::string& node_id() const noexcept { return node_id_; }
  // The original exception (embedded mode only; null once it crossed a process boundary).
  const std::exception_ptr& cause() const noexcept { return cause_; }

 private:
  std::string function_name_;
  std::string type_name_;
  std::string message_;
  std::string node_id_;
  std::exception_ptr cause_;
};

// A resource request that no node can ever satisfy (more CPUs than the machine has, an
// unknown custom resource, a negative or NaN amount is an InvalidArgument instead).
class InfeasibleError : public Error {
 public:
  explicit InfeasibleError(const std::string& message) : Error(ErrorCode::kInfeasible, message) {}
};

// The actor a call was made on is dead: killed, its constructor threw, or the runtime stopped.
class ActorDiedError : public Error {
 public:
  explicit ActorDiedError(const std::string& message) : Error(ErrorCode::kUnavailable, message) {}
};

// The object can no longer be produced (its task was cancelled, the runtime shut down).
class ObjectLostError : public Error {
 public:
  ObjectLostError(ErrorCode code, const std::string& message) : Error(code, message) {}
};

// Cluster mode: the object was borrowed (its ref came from another node, inside a task's
// arguments or result) and the node that owns it died, so nobody knows its value any more.
class OwnerDiedError : public ObjectLostError {
 public:
  explicit OwnerDiedError(const std::string& message)
      : ObjectLostError(ErrorCode::kUnavailable, message) {}
};

// The task was cancelled with prism::cancel before it finished.
class TaskCancelledError : public Error {
 public:
  explicit TaskCancelledError(const std::string& message) : Error(ErrorCode::kCancelled, message) {}
};

// get()/wait() with a timeout that passed before the object was ready.
class TimeoutError : public Error {
 public:
  explicit TimeoutError(const std::string& message)
      : Error(ErrorCode::kDeadlineExceeded, message) {}
};

// put() of a value that does not fit in the object store.
class ObjectStoreFullError : public Error {
 public:
  explicit ObjectStoreFullError(const std::string& message)
      : Error(ErrorCode::kResourceExhausted, message) {}
};

// Memory the running task asked for could not be had even after Prism gave back what it caches:
// device memory of a GPU (the pool trimmed, the allocation tried again). A system failure, not a
// bug in the task: retried under max_retries without retry_exceptions (a full object store is
// ObjectStoreFullError instead, and is not retried).
class OutOfMemoryError : public Error {
 public:
  explicit OutOfMemoryError(const std::string& message)
      : Error(ErrorCode::kResourceExhausted, message) {}
};

}  // namespace prism
