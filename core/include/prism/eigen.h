// prism/eigen.h — Eigen dense matrices and arrays cross process boundaries (cluster mode).
//
//   #include <Eigen/Dense>
//   #include <prism/eigen.h>
//   Eigen::MatrixXd multiply(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) { return a * b; }
//   PRISM_REMOTE(multiply);                       // may now run on any node
//
// A dense Eigen::Matrix or Eigen::Array (fixed or dynamic size, any storage order) travels as
// its rows, its columns and its coefficients' bytes: one copy each way. Include this header
// wherever such a type meets Prism (e.g. beside the functions that take it), so that every
// translation unit agrees that it can travel. Needs Eigen 3 (Debian's libeigen3-dev); the core
// does not include it by itself.
//
// Thread-safe: as prism/serialize.h.
#pragma once

#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#include "prism/serialize.h"

namespace prism {

namespace internal {
template <typename M>
struct EigenDenseSerializer {
  using Scalar = typename M::Scalar;
  static_assert(std::is_trivially_copyable_v<Scalar>, "Eigen coefficients must be plain values");
  static void write(Writer& w, const M& m) {
    const int64_t dims[2] = {static_cast<int64_t>(m.rows()), static_cast<int64_t>(m.cols())};
    w.bytes(dims, sizeof dims);
    w.bytes(m.data(), static_cast<size_t>(m.size()) * sizeof(Scalar));
  }
  static void read(Reader& r, M* m) {
    int64_t dims[2];
    r.bytes(dims, sizeof dims);
    if (dims[0] < 0 || dims[1] < 0) throw_malformed("negative matrix size");
    // Refused before allocating if the bytes left cannot hold the coefficients.
    if (dims[0] != 0 && static_cast<uint64_t>(dims[1]) >
                            r.remaining() / sizeof(Scalar) / static_cast<uint64_t>(dims[0])) {
      throw_malformed("matrix larger than its bytes");
    }
    if ((M::RowsAtCompileTime != Eigen::Dynamic && dims[0] != M::RowsAtCompileTime) ||
        (M::ColsAtCompileTime != Eigen::Dynamic && dims[1] != M::ColsAtCompileTime)) {
      throw_malformed("matrix size differs from its fixed size");
    }
    m->resize(static_cast<Eigen::Index>(dims[0]), static_cast<Eigen::Index>(dims[1]));
    r.bytes(m->data(), static_cast<size_t>(m->size()) * sizeof(Scalar));
  }
};
}  // namespace internal

template <typename S, int R, int C, int O, int MR, int MC>
struct Serializer<Eigen::Matrix<S, R, C, O, MR, MC>>
    : internal::EigenDenseSerializer<Eigen::Matrix<S, R, C, O, MR, MC>> {};
template <typename S, int R, int C, int O, int MR, int MC>
struct Serializer<Eigen::Array<S, R, C, O, MR, MC>>
    : internal::EigenDenseSerializer<Eigen::Array<S, R, C, O, MR, MC>> {};

}  // namespace prism
