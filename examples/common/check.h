// examples/common/check.h — every example checks its result: a wrong answer is a failure.
//
//   examples::Checker check("monte_carlo_pi");
//   check.expect(std::abs(pi - M_PI) < 0.01, "estimate " + std::to_string(pi) + " is off");
//   return check.finish();           // prints "monte_carlo_pi: OK" and returns 0, or lists
//                                    // what was wrong on stderr and returns 1
//
// Thread-compatible.
#pragma once

#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace examples {

class Checker {
 public:
  explicit Checker(std::string example) : example_(std::move(example)) {}

  // Records a failure (and prints it at once) when `ok` is false. Returns `ok`.
  bool expect(bool ok, const std::string& what) {
    if (!ok) {
      failures_.push_back(what);
      std::fprintf(stderr, "%s: WRONG RESULT: %s\n", example_.c_str(), what.c_str());
    }
    return ok;
  }
  bool ok() const { return failures_.empty(); }

  // The exit code for main(): 0 if every check passed, else 1.
  int finish() const {
    if (ok()) {
      std::printf("%s: result check OK\n", example_.c_str());
      return 0;
    }
    std::fprintf(stderr, "%s: FAILED (%zu wrong result%s)\n", example_.c_str(), failures_.size(),
                 failures_.size() == 1 ? "" : "s");
    return 1;
  }

 private:
  std::string example_;
  std::vector<std::string> failures_;
};

// For main's catch block: prints the error and returns the exit code 1.
//   int main(int argc, char** argv) try { ... } catch (const std::exception& e) {
//     return examples::report_error("sleep_tasks", e);
//   }
inline int report_error(const char* example, const std::exception& e) {
  std::fprintf(stderr, "%s: FAILED with an error: %s\n", example, e.what());
  return 1;
}

}  // namespace examples
