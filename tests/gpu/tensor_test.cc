// Device objects: prism::gpu::Tensor as a value, and how tensors move between tasks — handed
// over on one device with no copy, copied once per destination (host, another GPU), and counted
// in copy_stats().
//
// The tests run on whichever backend the process has. Without a CUDA device (this CI) that is
// the host backend: device memory is host memory, but what is copied, when and how often is the
// same as on CUDA, so the copy counts below hold on both. Code here never dereferences a device
// pointer on the host (to_vector() reads through the host copy), so it is correct on CUDA too.
// The CudaTensor* tests need real devices and skip (with the reason) otherwise.
//
// copy_stats() counts for the whole process: each test takes deltas around the part it
// measures and runs one runtime at a time.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "backend.h"  // gpu/src: the backend's current device, for the CUDA tests
#include "storage.h"  // gpu/src: a storage's users, for the in-place reads
#include "core/test_util.h"
#include "prism/gpu.h"
#include "prism/internal/remote_call.h"
#include "prism/prism.h"

namespace {

using prism::gpu::Backend;
using prism::gpu::CopyStats;
using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::Tensor;
using prism_test::Gate;
using prism_test::kTimeout;

bool on_host_backend() { return prism::gpu::backend() == Backend::kHost; }

std::vector<int64_t> iota(int n, int64_t first = 1) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

int64_t total_of(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

uint64_t address_of(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()); }

// Copies counted since `before`.
CopyStats copies_since(const CopyStats& before) { return prism::gpu::copy_stats() - before; }

// What a task reader saw of a tensor argument.
struct Seen {
  uint64_t address = 0;
  int device = -2;
  int64_t checksum = 0;  // only for host readers (device memory is not readable on the host)
};

Seen seen_on_device(const Tensor& t) { return Seen{address_of(t), t.device().index, 0}; }

Seen seen_on_host(const Tensor& t) {
  const int64_t* p = t.data<int64_t>();
  return Seen{address_of(t), t.device().index, std::accumulate(p, p + t.numel(), int64_t{0})};
}

// Tests that use logical GPU 0 (and 1): on CUDA they need that many devices.
class TensorTest : public ::testing::Test {
 protected:
  void need_gpus(int n) {
    if (!on_host_backend() && prism::gpu::cuda_device_count() < n) {
      GTEST_SKIP() << "needs " << n << " GPU(s): " << prism::gpu::backend_description();
    }
  }
  void SetUp() override { need_gpus(1); }
};

// ---- the value ----

TEST_F(TensorTest, EmptyTensorHasNoStorage) {
  const Tensor t;
  EXPECT_FALSE(t.defined());
  EXPECT_EQ(t.numel(), 0);
  EXPECT_EQ(t.nbytes(), 0u);
  EXPECT_EQ(t.raw_data(), nullptr);
  EXPECT_TRUE(t.device().is_host());
  EXPECT_TRUE(t.shape().empty());
  EXPECT_THROW((void)t.dim(0), std::out_of_range);
  // Moving an empty tensor anywhere is an empty tensor.
  EXPECT_FALSE(t.to(Device::gpu(0)).defined());
}

TEST_F(TensorTest, ShapeSizeAndType) {
  for (const Device d : {Device::host(), Device::gpu(0)}) {
    SCOPED_TRACE(d.to_string());
    const Tensor t = Tensor::empty(DType::kFloat32, {2, 3}, d);
    EXPECT_TRUE(t.defined());
    EXPECT_EQ(t.dtype(), DType::kFloat32);
    EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(t.dim(0), 2);
    EXPECT_EQ(t.dim(1), 3);
    EXPECT_THROW(t.dim(2), std::out_of_range);
    EXPECT_EQ(t.numel(), 6);
    EXPECT_EQ(t.nbytes(), 24u);
    EXPECT_EQ(t.device(), d);
    EXPECT_NE(t.raw_data(), nullptr);
    EXPECT_EQ(t.data<float>(), t.raw_data());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 256, 0u) << "device memory alignment";

    const Tensor z = Tensor::zeros(DType::kFloat64, {4}, d);
    EXPECT_EQ(z.to_vector<double>(), std::vector<double>(4, 0.0));

    const Tensor v = Tensor::from_vector(iota(6), {3, 2}, d);
    EXPECT_EQ(v.dtype(), DType::kInt64);
    EXPECT_EQ(v.device(), d);
    EXPECT_EQ(v.to_vector<int64_t>(), iota(6));
  }
  // The default device outside tasks is the host.
  EXPECT_TRUE(Tensor::empty(DType::kUInt8, {5}).device().is_host());
  // A shape with a zero dimension holds nothing; a negative one is refused.
  EXPECT_EQ(Tensor::empty(DType::kInt32, {0, 7}, Device::gpu(0)).numel(), 0);
  try {
    Tensor::empty(DType::kInt32, {2, -1}, Device::host());
    ADD_FAILURE() << "a negative dimension was accepted";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
  }
}

TEST_F(TensorTest, DtypeSizesAndNames) {
  EXPECT_EQ(prism::gpu::dtype_size(DType::kUInt8), 1u);
  EXPECT_EQ(prism::gpu::dtype_size(DType::kInt32), 4u);
  EXPECT_EQ(prism::gpu::dtype_size(DType::kInt64), 8u);
  EXPECT_EQ(prism::gpu::dtype_size(DType::kFloat32), 4u);
  EXPECT_EQ(prism::gpu::dtype_size(DType::kFloat64), 8u);
  EXPECT_STREQ(prism::gpu::dtype_name(DType::kFloat64), "float64");
  static_assert(prism::gpu::dtype_of<uint8_t>() == DType::kUInt8);
  static_assert(prism::gpu::dtype_of<float>() == DType::kFloat32);
}

TEST_F(TensorTest, WrongElementTypeThrows) {
  const Tensor t = Tensor::from_vector(std::vector<int32_t>{1, 2, 3}, {3}, Device::gpu(0));
  EXPECT_NE(t.data<int32_t>(), nullptr);
  for (auto access : {+[](const Tensor& x) { (void)x.data<float>(); },
                      +[](const Tensor& x) { (void)x.data<int64_t>(); },
                      +[](const Tensor& x) { (void)x.to_vector<uint8_t>(); }}) {
    try {
      access(t);
      ADD_FAILURE() << "an int32 tensor was read as another type";
    } catch (const prism::Error& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("int32"), std::string::npos) << e.what();
    }
  }
}

TEST_F(TensorTest, ReshapeSharesStorage) {
  const Tensor t = Tensor::from_vector(iota(6), {2, 3}, Device::gpu(0));
  const Tensor r = t.reshape({3, 2});
  EXPECT_TRUE(r.shares_storage(t));
  EXPECT_EQ(r.raw_data(), t.raw_data());
  EXPECT_EQ(r.shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 3})) << "reshape changed the original";
  EXPECT_EQ(r.to_vector<int64_t>(), iota(6));
  EXPECT_EQ(t.reshape({6}).numel(), 6);
  try {
    (void)t.reshape({4});
    ADD_FAILURE() << "reshape to a shape of another size was accepted";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
  }
  // A copy of the handle is the same storage too, and the same shape (a handover between tasks
  // allocates nothing for it); a new tensor is not.
  const Tensor same = t;
  EXPECT_TRUE(same.shares_storage(t));
  EXPECT_EQ(&same.shape(), &t.shape());
  EXPECT_NE(&r.shape(), &t.shape());
  EXPECT_EQ(&same.to(Device::gpu(0)).shape(), &t.shape());
  EXPECT_EQ(&same.to(Device::host()).shape(), &t.shape());
  // One host copy serves both views, each with its own shape.
  EXPECT_TRUE(r.to(Device::host()).shares_storage(t.to(Device::host())));
  EXPECT_EQ(r.to(Device::host()).shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(t.to(Device::host()).shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_FALSE(Tensor::from_vector(iota(6), {2, 3}, Device::gpu(0)).shares_storage(t));
}

TEST_F(TensorTest, FromHostChecksTheCount) {
  const std::vector<float> five(5, 1.0f);
  for (const Device d : {Device::host(), Device::gpu(0)}) {
    SCOPED_TRACE(d.to_string());
    try {
      (void)Tensor::from_vector(five, {2, 3}, d);
      ADD_FAILURE() << "5 elements accepted for a shape of 6";
    } catch (const prism::Error& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
    }
    try {
      (void)Tensor::from_host<float>(nullptr, 6, {6}, d);
      ADD_FAILURE() << "null data accepted";
    } catch (const prism::Error& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
    }
    const Tensor ok = Tensor::from_host(five.data(), 5, {5, 1}, d);
    EXPECT_EQ(ok.to_vector<float>(), five);
  }
}

TEST_F(TensorTest, ToString) {
  EXPECT_EQ(Tensor::empty(DType::kFloat32, {2, 3}, Device::gpu(0)).to_string(),
            "Tensor(float32, [2, 3], gpu:0)");
  EXPECT_EQ(Tensor::empty(DType::kUInt8, {7}, Device::host()).to_string(),
            "Tensor(uint8, [7], host)");
  EXPECT_EQ(Tensor().to_string(), "Tensor(float32, [], host)");
}

TEST_F(TensorTest, UploadAndDownloadAreCountedAndCached) {
  const CopyStats before = prism::gpu::copy_stats();
  const Tensor d = Tensor::from_vector(iota(8), {8}, Device::gpu(0));
  CopyStats c = copies_since(before);
  EXPECT_EQ(c.host_to_device, 1u);
  EXPECT_EQ(c.bytes, 64u);

  const Tensor h1 = d.to_host();
  const Tensor h2 = d.to(Device::host());
  c = copies_since(before);
  EXPECT_EQ(c.device_to_host, 1u) << "the host copy is made once";
  EXPECT_TRUE(h1.shares_storage(h2));
  EXPECT_TRUE(h1.device().is_host());
  EXPECT_EQ(h1.shape(), d.shape());
  EXPECT_EQ(h1.to_vector<int64_t>(), iota(8));
  EXPECT_EQ(d.to_vector<int64_t>(), iota(8));
  EXPECT_EQ(copies_since(before).total(), 2u) << "to_vector reads through the cached host copy";

  // A host tensor: from_vector is not a device copy, to(host) is itself.
  const CopyStats mid = prism::gpu::copy_stats();
  const Tensor h = Tensor::from_vector(iota(4), {4}, Device::host());
  EXPECT_TRUE(h.to_host().shares_storage(h));
  EXPECT_EQ(copies_since(mid).total(), 0u);
}

TEST_F(TensorTest, StreamOrderCallsOnTheHostBackend) {
  const Tensor t = Tensor::from_vector(iota(16), {4, 4}, Device::gpu(0));
  const prism::gpu::Stream s = prism::gpu::current_stream();  // the host stream out here
  EXPECT_TRUE(s.device().is_host());
  EXPECT_EQ(s.handle(), nullptr);
  EXPECT_NO_THROW(t.record(s));
  EXPECT_NO_THROW(t.wait_on(s));
  EXPECT_NO_THROW(t.synchronize());
  EXPECT_NO_THROW(s.synchronize());
  EXPECT_TRUE(t.to(Device::gpu(0)).shares_storage(t));
  EXPECT_EQ(t.to_vector<int64_t>(), iota(16));

  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  auto in_task = rt.task([] {
                     const prism::gpu::Stream cs = prism::gpu::current_stream();
                     const Tensor z = Tensor::zeros(DType::kInt32, {3});  // on this task's GPU
                     z.record(cs);
                     z.wait_on(cs);
                     z.synchronize();
                     cs.synchronize();
                     const bool here = z.to(prism::gpu::current_device()).shares_storage(z);
                     return here && z.device() == Device::gpu(0) && cs.device() == Device::gpu(0) &&
                            cs.handle() != nullptr;
                   })
                     .num_gpus(1)
                     .remote();
  EXPECT_TRUE(prism::get(in_task, kTimeout));
}

TEST_F(TensorTest, LogicalDeviceIndexesOnTheHostBackend) {
  const int beyond = prism::gpu::cuda_device_count() + 3;
  if (on_host_backend()) {
    // GPUs are logical: any index works, with no runtime at all.
    const Tensor t = Tensor::from_vector(iota(3), {3}, Device::gpu(beyond));
    EXPECT_EQ(t.device(), Device::gpu(beyond));
    EXPECT_EQ(t.to_vector<int64_t>(), iota(3));
  } else {
    try {
      (void)Tensor::empty(DType::kFloat32, {3}, Device::gpu(beyond));
      ADD_FAILURE() << "a tensor on a missing CUDA device was made";
    } catch (const prism::Error& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << e.what();
    }
  }
}

// ---- tensors between tasks ----

TEST_F(TensorTest, HandoverOnOneDeviceCopiesNothing) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  auto made = rt.task([] { return Tensor::from_vector(iota(1000), {10, 100}); })
                  .num_gpus(0.5)
                  .remote();
  // The stored value itself (get_shared does not place it), so no copy here.
  const std::shared_ptr<const Tensor> stored = prism::get_shared(made, kTimeout);
  ASSERT_EQ(stored->device(), Device::gpu(0));

  const CopyStats before = prism::gpu::copy_stats();
  std::vector<prism::ObjectRef<Seen>> readers;
  for (int i = 0; i < 3; ++i) {
    readers.push_back(rt.task(seen_on_device).num_gpus(0.5).remote(made));
  }
  for (const Seen& s : prism::get(readers, kTimeout)) {
    EXPECT_EQ(s.device, 0);
    EXPECT_EQ(s.address, address_of(*stored)) << "the reader got a copy, not the tensor";
  }
  const CopyStats c = copies_since(before);
  EXPECT_EQ(c.total(), 0u) << "h2d " << c.host_to_device << ", d2h " << c.device_to_host
                           << ", d2d " << c.device_to_device;
  // Shape and contents came through (checked after the measured part: this reads via the host).
  auto shape = rt.task([](const Tensor& t) { return t.shape(); }).num_gpus(0.5).remote(made);
  EXPECT_EQ(prism::get(shape, kTimeout), (std::vector<int64_t>{10, 100}));
  EXPECT_EQ(stored->to_vector<int64_t>(), iota(1000));
}

// The object a task's parameter refers to.
uintptr_t object_of(const Tensor& t) { return reinterpret_cast<uintptr_t>(&t); }

// An actor with a GPU: its calls run on streams of its own, not the thread's.
struct TensorReader {
  uintptr_t object(const Tensor& t) { return object_of(t); }
  uint64_t data(const Tensor& t) { return address_of(t); }
};
PRISM_ACTOR(TensorReader, &TensorReader::object, &TensorReader::data);

TEST_F(TensorTest, ATaskTakingAConstReferenceReadsTheStoredTensorWhenNothingIsToBeMoved) {
  // One worker thread: the producer and the readers run on its stream for gpu:0, so a reader
  // there needs neither a copy nor an ordering, and is handed the stored tensor itself.
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1, .max_threads = 1});
  auto made = rt.task([] { return Tensor::from_vector(iota(100), {100}); }).num_gpus(1).remote();
  const std::shared_ptr<const Tensor> stored = prism::get_shared(made, kTimeout);
  const uintptr_t stored_object = reinterpret_cast<uintptr_t>(stored.get());
  prism::gpu::internal::Storage* storage = prism::gpu::internal::storage_of(*stored);
  const size_t users = storage->users_for_testing();
  const CopyStats before = prism::gpu::copy_stats();

  EXPECT_EQ(prism::get(rt.task(object_of).num_gpus(1).remote(made), kTimeout), stored_object)
      << "a const Tensor& parameter got a copy of the handle";
  auto lambda = rt.task([](const Tensor& t) { return object_of(t); }).num_gpus(1).remote(made);
  EXPECT_EQ(prism::get(lambda, kTimeout), stored_object);
  // A tensor returned as it came (a link of a chain) is read in place by the next link.
  auto passed = rt.task([](const Tensor& t) { return t; }).num_gpus(1).remote(made);
  EXPECT_EQ(prism::get(rt.task(object_of).num_gpus(1).remote(passed), kTimeout),
            reinterpret_cast<uintptr_t>(prism::get_shared(passed, kTimeout).get()));
  // Other parameter forms (and a generic lambda, whose body is not compiled for const T& to
  // ask) get a handle of their own to the same memory.
  auto by_value = rt.task([](Tensor t) { return address_of(t); }).num_gpus(1).remote(made);
  auto by_rvalue = rt.task([](Tensor&& t) { return address_of(t); }).num_gpus(1).remote(made);
  auto generic = rt.task([](auto&& t) {
                     t = t.reshape({10, 10});  // (a body that could not take a const T&)
                     return address_of(t);
                   })
                     .num_gpus(1)
                     .remote(made);
  for (auto* r : {&by_value, &by_rvalue, &generic}) {
    EXPECT_EQ(prism::get(*r, kTimeout), address_of(*stored));
  }
  // Reading in place orders nothing: the storage's users are those it had.
  EXPECT_EQ(storage->users_for_testing(), users);
  EXPECT_EQ(copies_since(before).total(), 0u);

  // In one call, a tensor read in place beside one that must be placed (a host tensor, uploaded)
  // and plain arguments.
  const Tensor host = Tensor::from_vector(iota(8), {8}, Device::host());
  auto mixed = rt.task([](const Tensor& t, const Tensor& h, int k) {
                   return std::tuple(object_of(t), h.device().index, h.numel() + k);
                 })
                   .num_gpus(1)
                   .remote(made, rt.put(host), 2);
  const auto [mixed_object, mixed_device, mixed_count] = prism::get(mixed, kTimeout);
  EXPECT_EQ(mixed_object, stored_object);
  EXPECT_EQ(mixed_device, 0) << "the host tensor was not placed on the task's GPU";
  EXPECT_EQ(mixed_count, 10);
  EXPECT_EQ(copies_since(before).host_to_device, 1u);

  // Written on another stream (an actor's calls have their own): the reader's stream must be
  // ordered after the writer's, so it gets a placed handle, still with no copy of the memory.
  auto reader = rt.actor<TensorReader>().num_gpus(1).num_cpus(0).remote();
  EXPECT_NE(prism::get(reader.task(&TensorReader::object).remote(made), kTimeout), stored_object);
  EXPECT_EQ(prism::get(reader.task(&TensorReader::data).remote(made), kTimeout),
            address_of(*stored));
  EXPECT_EQ(storage->users_for_testing(), users + 1) << "the actor's stream waited on it";
  EXPECT_EQ(copies_since(before).total(), 1u);
  // A host reader is given the host copy, made once.
  auto on_host = rt.task([](const Tensor& t) { return std::pair(object_of(t), t.device()); })
                     .remote(made);
  const auto [host_object, host_device] = prism::get(on_host, kTimeout);
  EXPECT_NE(host_object, stored_object);
  EXPECT_TRUE(host_device.is_host());
  EXPECT_EQ(copies_since(before).device_to_host, 1u);
}

TEST_F(TensorTest, HostCopyIsMadeOnceForAllHostReaders) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  auto made = rt.task([] { return Tensor::from_vector(iota(4096), {64, 64}); })
                  .num_gpus(1)
                  .num_cpus(0)
                  .remote();
  const uint64_t device_address = address_of(*prism::get_shared(made, kTimeout));

  const CopyStats before = prism::gpu::copy_stats();
  std::vector<prism::ObjectRef<Seen>> readers;
  for (int i = 0; i < 5; ++i) readers.push_back(rt.task(seen_on_host).remote(made));
  const Tensor on_driver = prism::get(made, kTimeout);
  const std::vector<Seen> seen = prism::get(readers, kTimeout);

  const CopyStats c = copies_since(before);
  EXPECT_EQ(c.device_to_host, 1u);
  EXPECT_EQ(c.total(), 1u);
  EXPECT_EQ(c.bytes, 4096u * sizeof(int64_t));

  EXPECT_TRUE(on_driver.device().is_host());
  EXPECT_EQ(on_driver.shape(), (std::vector<int64_t>{64, 64}));
  EXPECT_NE(address_of(on_driver), device_address);
  EXPECT_EQ(on_driver.to_vector<int64_t>(), iota(4096));
  for (const Seen& s : seen) {
    EXPECT_EQ(s.device, Device::host().index);
    EXPECT_EQ(s.address, address_of(on_driver)) << "a host reader got its own copy";
    EXPECT_EQ(s.checksum, total_of(iota(4096)));
  }
  // Another get later is still the same host copy.
  EXPECT_TRUE(prism::get(made, kTimeout).shares_storage(on_driver));
  EXPECT_EQ(copies_since(before).total(), 1u);
}

TEST_F(TensorTest, UploadIsMadeOnceForAllGpuReaders) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  const CopyStats before = prism::gpu::copy_stats();
  const Tensor host = Tensor::from_vector(iota(512), {512}, Device::host());
  auto ref = rt.put(host);
  std::vector<prism::ObjectRef<Seen>> readers;
  for (int i = 0; i < 3; ++i) {
    readers.push_back(rt.task(seen_on_device).num_gpus(0.25).num_cpus(0).remote(ref));
  }
  const std::vector<Seen> seen = prism::get(readers, kTimeout);
  const CopyStats c = copies_since(before);
  EXPECT_EQ(c.host_to_device, 1u);
  EXPECT_EQ(c.total(), 1u);
  for (const Seen& s : seen) {
    EXPECT_EQ(s.device, 0);
    EXPECT_EQ(s.address, seen[0].address) << "a GPU reader got its own upload";
    EXPECT_NE(s.address, address_of(host));
  }
  // Host readers (a CPU task, the driver) get the put tensor itself.
  EXPECT_EQ(prism::get(rt.task(seen_on_host).remote(ref), kTimeout).address, address_of(host));
  EXPECT_TRUE(prism::get(ref, kTimeout).shares_storage(host));
  EXPECT_EQ(copies_since(before).total(), 1u);
  // The upload holds the contents (read back through its own host copy).
  auto back = rt.task([](const Tensor& t) { return t.to_vector<int64_t>(); }).num_gpus(1).remote(ref);
  EXPECT_EQ(prism::get(back, kTimeout), iota(512));
}

// An actor that holds one whole GPU for its life and makes tensors there.
struct TensorMaker {
  Tensor make(int n) { return Tensor::from_vector(iota(n), {n}); }
  int device() { return prism::gpu::current_device().index; }
};
PRISM_ACTOR(TensorMaker, &TensorMaker::make, &TensorMaker::device);

// ---- crossing nodes (cluster mode serializes tensors through host memory) ----

TEST_F(TensorTest, SerializedTensorsKeepDtypeShapeAndElements) {
  static_assert(prism::is_serializable_v<Tensor>);
  // On the host, an empty tensor, a zero-size one and a scalar (rank 0).
  const Tensor host = Tensor::from_vector(iota(12), {3, 4}, Device::host());
  const Tensor back = prism::from_bytes<Tensor>(prism::to_bytes(host));
  EXPECT_EQ(back.dtype(), DType::kInt64);
  EXPECT_EQ(back.shape(), (std::vector<int64_t>{3, 4}));
  EXPECT_TRUE(back.device().is_host()) << "read outside a GPU task: on the host";
  EXPECT_EQ(back.to_vector<int64_t>(), iota(12));
  EXPECT_FALSE(back.shares_storage(host));
  EXPECT_FALSE(prism::from_bytes<Tensor>(prism::to_bytes(Tensor())).defined());
  const Tensor none = prism::from_bytes<Tensor>(
      prism::to_bytes(Tensor::empty(DType::kFloat32, {0, 5}, Device::host())));
  EXPECT_EQ(none.shape(), (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(none.numel(), 0);
  const std::vector<double> one{2.5};
  const Tensor scalar = prism::from_bytes<Tensor>(
      prism::to_bytes(Tensor::from_vector(one, {}, Device::host())));
  EXPECT_TRUE(scalar.shape().empty());
  EXPECT_EQ(scalar.to_vector<double>(), one);

  // A GPU tensor is written through its (cached) host copy; the reader's copy lands on the GPU
  // granted to the task that reads it.
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  auto on_gpu = rt.task([] {
                    return Tensor::from_vector(iota(6, 10), {2, 3});
                  }).num_gpus(1).remote();
  const Tensor made = *prism::get_shared(on_gpu, kTimeout);
  ASSERT_EQ(made.device(), Device::gpu(0));
  const std::string bytes = prism::to_bytes(made);
  auto read_in_gpu_task = rt.task([bytes] {
                              const Tensor t = prism::from_bytes<Tensor>(bytes);
                              return std::pair<int, std::vector<int64_t>>(t.device().index,
                                                                          t.shape());
                            }).num_gpus(1).remote();
  const auto [device, shape] = prism::get(read_in_gpu_task, kTimeout);
  EXPECT_EQ(device, 0);
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(prism::from_bytes<Tensor>(bytes).to_vector<int64_t>(), iota(6, 10));
}

TEST_F(TensorTest, MalformedTensorBytesAreRefused) {
  const std::string good =
      prism::to_bytes(Tensor::from_vector(iota(4), {2, 2}, Device::host()));
  auto refused = [](const std::string& bytes, const char* what) {
    try {
      prism::from_bytes<Tensor>(bytes);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const prism::Error& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << what;
    }
  };
  // Layout: flag (1), dtype (1), rank (4), dims (8 each), byte count (8), elements.
  for (size_t n = 0; n < good.size(); ++n) refused(good.substr(0, n), "a truncated tensor");
  refused(good + "x", "a byte left over");
  std::string bad = good;
  bad[0] = 3;
  refused(bad, "an unknown flag");
  bad[0] = 2;
  refused(bad, "the stub of a tensor kept on another node");
  bad = good;
  bad[1] = 9;
  refused(bad, "an unknown dtype");
  bad = good;
  const int64_t negative = -2;
  std::memcpy(&bad[6], &negative, sizeof negative);
  refused(bad, "a negative dimension");
  bad = good;
  const int64_t three = 3;
  std::memcpy(&bad[6], &three, sizeof three);
  refused(bad, "a shape the elements do not fill");
  bad = good;
  const int64_t huge = int64_t{1} << 62;
  std::memcpy(&bad[6], &huge, sizeof huge);
  std::memcpy(&bad[14], &huge, sizeof huge);
  refused(bad, "a shape whose size overflows");
  // Rank 3, one dimension 0: empty, but the others' product would overflow int64.
  std::string zero_dim = prism::to_bytes(Tensor::empty(DType::kUInt8, {1, 1, 0}, Device::host()));
  const int64_t big = int64_t{1} << 62;
  const int64_t three_again = 3;
  std::memcpy(&zero_dim[6], &big, sizeof big);
  std::memcpy(&zero_dim[14], &three_again, sizeof three_again);
  refused(zero_dim, "a zero dimension beside an overflowing product");
}

// A GPU task's large tensor result kept on its node (cluster mode, prism/internal/remote_call.h:
// LiveResult): the node's bytes are a stub, the tensor itself stays where it was made, and its
// serialized form is written only when asked for.
struct SlotScope final : prism::internal::RefScope {
  const void* at = nullptr;
  prism::internal::DecodedSlot* slot = nullptr;
  prism::internal::DecodedSlot* decoded_at(const void* p) noexcept override {
    return p == at ? slot : nullptr;
  }
  uint64_t export_ref(prism::internal::ObjectEntry*,
                      void (*)(prism::internal::ObjectEntry*, std::string*)) override {
    throw std::logic_error("no refs here");
  }
  prism::internal::EntryPtr import_ref(uint64_t, prism::internal::ObjectEntry* (*)(prism::ObjectId),
                                       prism::internal::RemoteMaterializer) override {
    throw std::logic_error("no refs here");
  }
};

TEST_F(TensorTest, AResultKeptLiveIsAStubReadOnlyBesideTheTensor) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  auto on_gpu = rt.task([] { return Tensor::from_vector(iota(1000), {10, 100}); })
                    .num_gpus(1)
                    .remote();
  const Tensor made = *prism::get_shared(on_gpu, kTimeout);
  ASSERT_EQ(made.device(), Device::gpu(0));
  const std::string wire = prism::to_bytes(made);

  prism::internal::LiveResult live;
  live.min_bytes = 1000;
  Tensor result = made;
  std::string stub;
  prism::internal::encode_result(result, &stub, nullptr, &live);
  ASSERT_NE(live.value, nullptr) << "a GPU tensor of 8000 bytes is kept as it is";
  EXPECT_EQ(live.wire_bytes, wire.size());
  EXPECT_LT(stub.size(), 64u) << "the stub is a header, without the elements";
  const CopyStats before = prism::gpu::copy_stats();
  std::string written;
  live.write(live.value.get(), &written);
  EXPECT_EQ(written, wire) << "its serialized form, made when asked for";
  EXPECT_EQ((prism::gpu::copy_stats() - before).network_sends, 1u);

  // Away from the tensor (another node, a spill file, a malformed message) the stub is refused.
  try {
    (void)prism::from_bytes<Tensor>(stub);
    ADD_FAILURE() << "a stub was read without its tensor";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("kept on another node"), std::string::npos) << e.what();
  }
  // Beside it (the object's slot, as the node's readers find it): a GPU task gets the tensor
  // itself; a reader outside tasks gets a host copy.
  prism::internal::DecodedSlot slot;
  {
    prism::internal::MutexLock lock(slot.mu);
    slot.type = live.tag;
    slot.value = live.value;
  }
  SlotScope scope;
  scope.at = stub.data();
  scope.slot = &slot;
  auto shared = rt.task([&] {
                    prism::internal::RefScopeGuard guard(&scope);
                    return prism::from_bytes<Tensor>(stub).shares_storage(made);
                  }).num_gpus(1).remote();
  EXPECT_TRUE(prism::get(shared, kTimeout));
  {
    prism::internal::RefScopeGuard guard(&scope);
    const Tensor on_host = prism::from_bytes<Tensor>(stub);
    EXPECT_TRUE(on_host.device().is_host());
    EXPECT_EQ(on_host.to_vector<int64_t>(), iota(1000));
    // A slot holding something else (a reader's host copy of bytes that came from elsewhere).
    prism::internal::MutexLock lock(slot.mu);
    slot.type = nullptr;
  }
  {
    prism::internal::RefScopeGuard guard(&scope);
    EXPECT_THROW((void)prism::from_bytes<Tensor>(stub), prism::Error);
  }

  // Below the threshold, or on the host: written whole, as before.
  prism::internal::LiveResult small;
  small.min_bytes = wire.size() + 1;
  Tensor again = made;
  std::string bytes;
  prism::internal::encode_result(again, &bytes, nullptr, &small);
  EXPECT_EQ(small.value, nullptr);
  EXPECT_EQ(bytes, wire);
  prism::internal::LiveResult host_live;
  Tensor host = made.to_host();
  prism::internal::encode_result(host, &bytes, nullptr, &host_live);
  EXPECT_EQ(host_live.value, nullptr);
  EXPECT_EQ(bytes, wire);
}

TEST_F(TensorTest, PeerCopyToAnotherGpuIsMadeOnce) {
  need_gpus(2);
  if (IsSkipped()) return;
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 2});
  // The maker holds its GPU, so a whole-GPU reader must run on the other one.
  auto maker = rt.actor<TensorMaker>().num_gpus(1).remote();
  const int home = prism::get(maker.task(&TensorMaker::device).remote(), kTimeout);
  ASSERT_TRUE(home == 0 || home == 1) << home;
  auto made = maker.task(&TensorMaker::make).remote(300);
  const uint64_t home_address = address_of(*prism::get_shared(made, kTimeout));

  const CopyStats before = prism::gpu::copy_stats();
  std::vector<Seen> seen;
  for (int i = 0; i < 2; ++i) {
    seen.push_back(prism::get(rt.task(seen_on_device).num_gpus(1).remote(made), kTimeout));
  }
  const CopyStats c = copies_since(before);
  EXPECT_EQ(c.device_to_device, 1u) << "the peer copy is made once and cached";
  EXPECT_EQ(c.total(), 1u);
  EXPECT_EQ(c.bytes, 300u * sizeof(int64_t));
  for (const Seen& s : seen) {
    EXPECT_EQ(s.device, 1 - home);
    EXPECT_NE(s.address, home_address);
    EXPECT_EQ(s.address, seen[0].address);
  }
  // Its contents (through the peer copy's own host copy).
  auto back = rt.task([](const Tensor& t) { return t.to_vector<int64_t>(); }).num_gpus(1).remote(made);
  EXPECT_EQ(prism::get(back, kTimeout), iota(300));
  prism::kill(maker);
}

TEST_F(TensorTest, PeerCopyOutsideTasks) {
  need_gpus(2);
  if (IsSkipped()) return;
  const Tensor t = Tensor::from_vector(iota(100), {10, 10}, Device::gpu(0));
  const CopyStats before = prism::gpu::copy_stats();
  const Tensor p = t.to(Device::gpu(1));
  EXPECT_EQ(copies_since(before).device_to_device, 1u);
  EXPECT_EQ(p.device(), Device::gpu(1));
  EXPECT_EQ(p.shape(), t.shape());
  EXPECT_FALSE(p.shares_storage(t));
  const Tensor again = t.to(Device::gpu(1));
  EXPECT_TRUE(again.shares_storage(p)) << "a second to(gpu:1) made another copy";
  EXPECT_EQ(copies_since(before).total(), 1u);
  EXPECT_EQ(p.to_vector<int64_t>(), iota(100));
}

TEST_F(TensorTest, MultipleTensorResults) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  auto [a, b] = rt.task([] {
                    return std::tuple<Tensor, Tensor>(
                        Tensor::from_vector(iota(6), {2, 3}),
                        Tensor::zeros(DType::kFloat32, {4}));
                  })
                    .num_gpus(0.5)
                    .num_returns<2>()
                    .remote();
  auto devices = rt.task([](const Tensor& x, const Tensor& y) {
                     return std::vector<int>{x.device().index, y.device().index,
                                             static_cast<int>(x.numel()),
                                             static_cast<int>(y.numel())};
                   })
                     .num_gpus(0.5)
                     .remote(a, b);
  EXPECT_EQ(prism::get(devices, kTimeout), (std::vector<int>{0, 0, 6, 4}));
  EXPECT_EQ(prism::get(a, kTimeout).to_vector<int64_t>(), iota(6));
  EXPECT_EQ(prism::get(b, kTimeout).to_vector<float>(), std::vector<float>(4, 0.0f));
}

TEST_F(TensorTest, HostTensorsCountAgainstTheObjectStore) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1, .object_store_bytes = int64_t{64} << 20});
  const double capacity = rt.cluster_resources().at("object_store_memory");
  constexpr int kFloats = 1 << 20;  // 4 MiB
  constexpr double kBytes = kFloats * sizeof(float);

  auto host = rt.put(Tensor::zeros(DType::kFloat32, {kFloats}, Device::host()));
  EXPECT_LE(rt.available_resources().at("object_store_memory"), capacity - kBytes);
  EXPECT_GE(rt.available_resources().at("object_store_memory"), capacity - 2 * kBytes);
  host = {};
  EXPECT_TRUE(prism_test::eventually(
      [&] { return rt.available_resources().at("object_store_memory") == capacity; }));

  // Device memory is the GPU's: neither a put device tensor nor a GPU task's result counts.
  auto device = rt.put(Tensor::zeros(DType::kFloat32, {kFloats}, Device::gpu(0)));
  EXPECT_EQ(rt.available_resources().at("object_store_memory"), capacity);
  auto made = rt.task([] { return Tensor::zeros(DType::kFloat32, {kFloats}); }).num_gpus(1).remote();
  EXPECT_EQ(prism::get_shared(made, kTimeout)->device(), Device::gpu(0));
  EXPECT_EQ(rt.available_resources().at("object_store_memory"), capacity);
}

TEST_F(TensorTest, GpuTaskErrorsReachGet) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  auto boom = rt.task([]() -> Tensor { throw std::runtime_error("boom on gpu"); })
                  .num_gpus(1)
                  .name("gpu_boom")
                  .remote();
  try {
    (void)prism::get(boom, kTimeout);
    FAIL() << "the task's exception was lost";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.function_name(), "gpu_boom");
    EXPECT_EQ(e.message(), "boom on gpu");
  }
  // A GPU reader of the failed tensor fails with the same error without running.
  auto reader = rt.task(seen_on_device).num_gpus(1).remote(boom);
  EXPECT_THROW((void)prism::get(reader, kTimeout), prism::TaskError);

  // Prism's own errors thrown in a task keep their type (see capture_task_error): a tensor
  // read as the wrong element type reaches get() as prism::Error(kInvalidArgument).
  auto wrong = rt.task([] {
                   const Tensor t = Tensor::zeros(DType::kFloat32, {8});
                   return t.data<int32_t>() != nullptr;
                 })
                   .num_gpus(1)
                   .remote();
  try {
    (void)prism::get(wrong, kTimeout);
    FAIL() << "the task's exception was lost";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find("float32"), std::string::npos) << e.what();
  }
  // The failed tasks gave their GPU back.
  EXPECT_TRUE(prism_test::eventually([&] { return rt.available_resources().at("GPU") == 1; }));
  EXPECT_EQ(prism::get(rt.task([] { return prism::gpu::current_device().index; }).num_gpus(1).remote(),
                       kTimeout),
            0);
}

// ---- real devices ----

class CudaTensorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (prism::gpu::backend() != Backend::kCuda) {
      GTEST_SKIP() << "no CUDA device: " << prism::gpu::backend_description();
    }
  }
};

TEST_F(CudaTensorTest, HandoverBetweenTasksOnOneDevice) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  auto made = rt.task([] { return Tensor::from_vector(iota(1 << 16), {256, 256}); })
                  .num_gpus(0.5)
                  .remote();
  const uint64_t device_address = address_of(*prism::get_shared(made, kTimeout));
  const CopyStats before = prism::gpu::copy_stats();
  const Seen s = prism::get(rt.task(seen_on_device).num_gpus(0.5).remote(made), kTimeout);
  EXPECT_EQ(copies_since(before).total(), 0u);
  EXPECT_EQ(s.device, 0);
  EXPECT_EQ(s.address, device_address);
  // The reader's stream waits on the producer's event; reading back goes through the host.
  auto back = rt.task([](const Tensor& t) { return t.to_vector<int64_t>(); })
                  .num_gpus(0.5)
                  .remote(made);
  EXPECT_EQ(prism::get(back, kTimeout), iota(1 << 16));
  EXPECT_EQ(copies_since(before).device_to_host, 1u);
}

TEST_F(CudaTensorTest, PeerCopy) {
  if (prism::gpu::cuda_device_count() < 2) {
    GTEST_SKIP() << "needs 2 CUDA devices: " << prism::gpu::backend_description();
  }
  const Tensor t = Tensor::from_vector(iota(1 << 16), {1 << 16}, Device::gpu(0));
  const CopyStats before = prism::gpu::copy_stats();
  const Tensor p = t.to(Device::gpu(1));
  EXPECT_EQ(p.device(), Device::gpu(1));
  EXPECT_EQ(copies_since(before).device_to_device, 1u);
  EXPECT_TRUE(t.to(Device::gpu(1)).shares_storage(p));
  EXPECT_EQ(p.to_vector<int64_t>(), iota(1 << 16));
}

TEST_F(CudaTensorTest, MissingDeviceIsRefused) {
  const int n = prism::gpu::cuda_device_count();
  try {
    (void)Tensor::empty(DType::kFloat32, {4}, Device::gpu(n));
    FAIL() << "a tensor on gpu:" << n << " of " << n << " devices was made";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << e.what();
  }
}

TEST_F(CudaTensorTest, FreeingATensorOnAnotherDeviceKeepsTheCurrentDevice) {
  // A task granted GPU k runs with device k current (stream.h) so that its own CUDA calls and
  // kernel launches on current_stream() go to device k. Dropping a tensor that lives on another
  // GPU must not change that.
  const int n = prism::gpu::cuda_device_count();
  if (n < 2) GTEST_SKIP() << "needs 2 CUDA devices: " << prism::gpu::backend_description();
  auto& backend = prism::gpu::internal::backend_instance();

  const int before = backend.get_device();
  { const Tensor other = Tensor::zeros(DType::kFloat32, {16}, Device::gpu(before == 0 ? 1 : 0)); }
  EXPECT_EQ(backend.get_device(), before) << "outside tasks";

  prism::Runtime rt({.num_cpus = 1, .num_gpus = 2});
  auto devices = rt.task([n] {
                     auto& b = prism::gpu::internal::backend_instance();
                     const int mine = prism::gpu::current_device().index;
                     const int at_start = b.get_device();
                     { const Tensor t = Tensor::zeros(DType::kFloat32, {16}, Device::gpu((mine + 1) % n)); }
                     return std::vector<int>{mine, at_start, b.get_device()};
                   })
                     .num_gpus(1)
                     .remote();
  const std::vector<int> d = prism::get(devices, kTimeout);
  EXPECT_EQ(d[1], d[0]) << "the task's device is not current when it starts";
  EXPECT_EQ(d[2], d[0]) << "freeing a tensor on gpu:" << (d[0] + 1) % n
                        << " left that device current";
}

}  // namespace
