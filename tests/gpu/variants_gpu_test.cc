// Heterogeneous tasks with GPU tensors: a variant call's tensor argument arrives on the device
// for the GPU variant and in host memory for the CPU one, results agree whichever ran, the
// out-of-memory fallback reads host tensors, and the planner sees where tensors are. Runs on
// whichever backend the process has (the host backend's logical GPUs here).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/test_util.h"
#include "prism/gpu.h"
#include "prism/prism.h"

namespace {

using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::Tensor;
using prism_test::kTimeout;

double host_sum(const Tensor& t) {
  EXPECT_TRUE(t.device().is_host()) << t.to_string();
  const double* p = t.data<double>();
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += p[i];
  return s;
}
double device_sum(const Tensor& t) {
  EXPECT_FALSE(t.device().is_host()) << t.to_string();
  EXPECT_EQ(prism::gpu_ids().size(), 1u);
  return prism::gpu::sum(t);
}
double device_out_of_memory(const Tensor& t) {
  EXPECT_FALSE(t.device().is_host()) << t.to_string();
  throw prism::OutOfMemoryError("gpu 0: no room for the workspace");
}

Tensor ramp(int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<double>(i % 97) * 0.5;
  return Tensor::from_vector(v, {n}, Device::host());
}

TEST(GpuVariants, TensorsArriveWhereTheChosenVariantRunsAndResultsAgree) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  auto sum = prism::variants(host_sum, device_sum).name("tensor_sum");
  const Tensor x = ramp(100000);
  const double want = host_sum(x);
  auto on_cpu = rt.task(sum).variant("cpu").remote(x);
  auto on_gpu = rt.task(sum).variant("gpu").remote(x);
  EXPECT_DOUBLE_EQ(prism::get(on_cpu, kTimeout), want);
  EXPECT_NEAR(prism::get(on_gpu, kTimeout), want, 1e-9 * want);
  EXPECT_EQ(prism::variant_of(on_cpu), "cpu");
  EXPECT_EQ(prism::variant_of(on_gpu), "gpu");
  // A tensor made by a GPU task reaches a CPU variant as a host copy; planned calls agree too.
  auto made = rt.task([] { return ramp(5000).to(prism::gpu::current_device()); })
                  .num_gpus(1)
                  .remote();
  const double want_made = host_sum(ramp(5000));
  std::vector<prism::ObjectRef<double>> refs;
  for (int i = 0; i < 10; ++i) refs.push_back(rt.task(sum).remote(made));
  for (auto& r : refs) EXPECT_NEAR(prism::get(r, kTimeout), want_made, 1e-9 * want_made);
}

TEST(GpuVariants, TheOutOfMemoryFallbackReadsHostTensors) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  // The GPU variant first: the first call calibrates it (ties go to the first variant).
  auto sum = prism::variants(prism::gpu_variant("gpu", device_out_of_memory),
                             prism::cpu_variant("cpu", host_sum))
                 .name("tensor_sum_oom");
  const Tensor x = ramp(1000);
  auto r = rt.task(sum).remote(x);
  EXPECT_DOUBLE_EQ(prism::get(r, kTimeout), host_sum(x));
  EXPECT_EQ(prism::variant_of(r), "cpu");
}

TEST(GpuVariants, ThePlannerSeesWhereATensorIs) {
  using Where = prism::internal::Placement<Tensor>;
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  const Tensor host = ramp(1000);
  prism::internal::DataWhere w = Where::where(host);
  EXPECT_EQ(w.bytes, 8000);
  EXPECT_TRUE(w.on_host);
  EXPECT_FALSE(w.on_device);
  // A GPU task reads it: the device copy is cached with the storage.
  auto touched = rt.task([](const Tensor& t) { return t.device().index; }).num_gpus(1).remote(host);
  EXPECT_EQ(prism::get(touched, kTimeout), 0);
  w = Where::where(host);
  EXPECT_TRUE(w.on_host);
  EXPECT_TRUE(w.on_device);
  // Made on the device: there only, until someone reads it on the host.
  auto made = rt.task([] { return Tensor::zeros(DType::kFloat64, {10}); }).num_gpus(1).remote();
  auto on_device = rt.task([](const Tensor& t) {
                       const auto w2 = Where::where(t);
                       return w2.on_device && !w2.on_host;
                     })
                       .num_gpus(1)
                       .remote(made);
  EXPECT_TRUE(prism::get(on_device, kTimeout));
  EXPECT_EQ(Where::where(Tensor()).bytes, 0);
}

TEST(GpuVariants, SumExpSinhMatchesALoop) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  auto check = rt.task([] {
                   std::vector<double> v{1.0, 0.5, -2.0, 0.0, 3.25};
                   double want = 0;
                   for (double x : v) want += std::exp(x) * std::sinh(x);
                   const Tensor d = Tensor::from_vector(v, {5});
                   const double got = prism::gpu::sum_exp_sinh(d);
                   std::vector<float> f(v.begin(), v.end());
                   const double got_f = prism::gpu::sum_exp_sinh(Tensor::from_vector(f, {5}));
                   const double empty =
                       prism::gpu::sum_exp_sinh(Tensor::zeros(DType::kFloat64, {0}));
                   return std::fabs(got - want) <= 1e-12 * std::fabs(want) &&
                          std::fabs(got_f - want) <= 1e-12 * std::fabs(want) && empty == 0.0;
                 })
                   .num_gpus(1)
                   .remote();
  EXPECT_TRUE(prism::get(check, kTimeout));
  // Host tensors are refused, as by every kernel.
  EXPECT_THROW(prism::gpu::sum_exp_sinh(ramp(3)), prism::Error);
}

}  // namespace
