// examples/common/table.h — a plain-text table and the "serial / Prism / speed-up" line.
//
//   examples::Table t({"workload", "serial s", "prism s", "speed-up"});
//   t.add({"matmul tree", examples::fixed(1.92), examples::fixed(1.01), examples::times(1.9)});
//   t.print();
//   examples::print_speedup("sleep tasks", 9.9, 5.1);  // serial 9.90 s, prism 5.10 s, 1.94x
//
// Thread-compatible.
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace examples {

inline std::string fixed(double v, int decimals = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}
inline std::string times(double v) { return fixed(v, 2) + "x"; }

class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

  void print() const {
    std::vector<size_t> width;
    for (const auto& row : rows_) {
      width.resize(std::max(width.size(), row.size()), 0);
      for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    }
    for (size_t r = 0; r < rows_.size(); ++r) {
      std::string line;
      for (size_t i = 0; i < rows_[r].size(); ++i) {
        // First column left-aligned (names), the others right-aligned (numbers).
        const std::string pad(width[i] - rows_[r][i].size(), ' ');
        line += (i == 0 ? rows_[r][i] + pad : "  " + pad + rows_[r][i]);
      }
      std::printf("%s\n", line.c_str());
      if (r == 0) std::printf("%s\n", std::string(line.size(), '-').c_str());
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// One line: "<what>: serial 9.90 s, prism 5.10 s, speed-up 1.94x".
inline void print_speedup(const std::string& what, double serial_s, double prism_s) {
  std::printf("%s: serial %.2f s, prism %.2f s, speed-up %.2fx\n", what.c_str(), serial_s, prism_s,
              prism_s > 0 ? serial_s / prism_s : 0.0);
}

}  // namespace examples
