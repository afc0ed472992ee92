// examples/common/flags.h — a tiny --name=value command-line parser for the examples.
//
//   examples::Flags flags(argc, argv);
//   const int images = flags.get_int("images", 50, "how many images");
//   const double scale = flags.get_double("scale", 1.0, "multiplies every sleep");
//   const bool full = flags.get_bool("full", "run the full-size workloads");
//   const int cpus = flags.cpus();                 // --cpus=N, default: hardware threads
//   if (!flags.ok()) return 2;                     // --help, or an unknown/malformed flag
//
// Flags are --name=value or, for booleans, --name (same as --name=true). Every get_* call
// declares a flag; ok() prints the usage when something was wrong or --help was given.
//
// Thread-compatible: parse and read on one thread.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace examples {

class Flags {
 public:
  Flags(int argc, char** argv) : program_(argc > 0 ? argv[0] : "example") {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        help_ = true;
      } else if (arg.rfind("--", 0) == 0) {
        const size_t eq = arg.find('=');
        values_[arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2)] =
            eq == std::string::npos ? "true" : arg.substr(eq + 1);
      } else {
        errors_.push_back("unexpected argument '" + arg + "'");
      }
    }
  }

  long long get_int(const std::string& name, long long def, const std::string& help) {
    const std::string* v = lookup(name, std::to_string(def), help);
    if (!v) return def;
    char* end = nullptr;
    const long long x = std::strtoll(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0') return bad(name, *v), def;
    return x;
  }

  double get_double(const std::string& name, double def, const std::string& help) {
    const std::string* v = lookup(name, std::to_string(def), help);
    if (!v) return def;
    char* end = nullptr;
    const double x = std::strtod(v->c_str(), &end);
    if (v->empty() || *end != '\0') return bad(name, *v), def;
    return x;
  }

  bool get_bool(const std::string& name, const std::string& help) {
    const std::string* v = lookup(name, "false", help);
    if (!v) return false;
    if (*v == "true" || *v == "1") return true;
    if (*v != "false" && *v != "0") bad(name, *v);
    return false;
  }

  std::string get_string(const std::string& name, const std::string& def, const std::string& help) {
    const std::string* v = lookup(name, def, help);
    return v ? *v : def;
  }

  // --cpus=N: CPU slots for prism::init (default: the hardware threads of this machine).
  int cpus() {
    const long long hw = std::max(1u, std::thread::hardware_concurrency());
    const long long n = get_int("cpus", hw, "CPU slots given to Prism");
    if (n < 1) errors_.push_back("--cpus must be at least 1");
    return static_cast<int>(n < 1 ? 1 : n);
  }

  // False after printing the usage if --help was given or a flag was unknown or malformed.
  bool ok() {
    for (const auto& [name, value] : values_) {
      if (!declared_.count(name)) errors_.push_back("unknown flag --" + name);
    }
    if (errors_.empty() && !help_) return true;
    for (const auto& e : errors_) std::fprintf(stderr, "error: %s\n", e.c_str());
    std::fprintf(stderr, "usage: %s [flags]\n", program_.c_str());
    for (const auto& u : usage_) std::fprintf(stderr, "  %s\n", u.c_str());
    return false;
  }

 private:
  const std::string* lookup(const std::string& name, const std::string& def,
                            const std::string& help) {
    declared_[name] = true;
    usage_.push_back("--" + name + " (default " + def + "): " + help);
    auto it = values_.find(name);
    return it == values_.end() ? nullptr : &it->second;
  }
  void bad(const std::string& name, const std::string& value) {
    errors_.push_back("bad value '" + value + "' for --" + name);
  }

  std::string program_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> declared_;
  std::vector<std::string> usage_;
  std::vector<std::string> errors_;
  bool help_ = false;
};

}  // namespace examples
