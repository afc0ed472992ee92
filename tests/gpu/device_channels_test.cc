// Device channels (device_channels.h) driven directly, in one process: a sending and a receiving
// side over loopback sockets between logical GPUs (the host backend), as the cluster link uses
// them between two nodes; a transport whose joins fail; and, built with CUDA, the NCCL library's
// loading and unique ids (the rest of NCCL needs GPUs).
#include "device_channels.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "prism/errors.h"
#include "prism/gpu/tensor.h"

namespace {

using namespace std::chrono_literals;
using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::Tensor;
using prism::gpu::internal::make_channels;
using prism::gpu::internal::PairTransport;
using prism::internal::DeviceChannels;
using prism::internal::LiveResult;

// What a receive ended with: the tensor made live (empty if none) and the error.
struct Received {
  Tensor tensor;
  const void* tag = nullptr;
  uint64_t wire_bytes = 0;
  std::string stub;
  std::string error;
};

// (The promises are shared with the callbacks: a callback that comes after a failed wait, when
// the channels close at the test's end, finds its promise still there.)
struct ReceiveWaiter {
  std::shared_ptr<std::promise<Received>> promise = std::make_shared<std::promise<Received>>();
  DeviceChannels::ReceiveDone callback() {
    return [p = promise](LiveResult* live, std::string* stub, const std::string& error) {
      Received r;
      r.error = error;
      if (live != nullptr) {
        r.tensor = *static_cast<const Tensor*>(live->value.get());
        r.tag = live->tag;
        r.wire_bytes = live->wire_bytes;
        r.stub = *stub;
      }
      p->set_value(std::move(r));
    };
  }
  Received get() {
    auto f = promise->get_future();
    if (f.wait_for(30s) != std::future_status::ready) {
      ADD_FAILURE() << "a receive never ended";
      return Received{Tensor(), nullptr, 0, "", "timed out"};
    }
    return f.get();
  }
};

struct SendWaiter {
  std::shared_ptr<std::promise<std::string>> promise =
      std::make_shared<std::promise<std::string>>();
  DeviceChannels::SendDone callback() {
    return [p = promise](const std::string& error) { p->set_value(error); };
  }
  std::string get() {
    auto f = promise->get_future();
    if (f.wait_for(30s) != std::future_status::ready) return "a send never ended";
    return f.get();
  }
};

// A tensor on logical `gpu` of `n` float32 elements from `seed`, and its stub (what the cluster
// link keeps as its bytes and sends with an offer).
struct Kept {
  std::shared_ptr<Tensor> tensor;
  std::string stub;
};
Kept kept_on(int gpu, int64_t n, float seed) {
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = seed + static_cast<float>(i);
  Kept k;
  k.tensor = std::make_shared<Tensor>(Tensor::from_vector(v, {n}, Device::gpu(gpu)));
  prism::Writer w(&k.stub);
  prism::internal::Placement<Tensor>::write_stub(w, *k.tensor);
  return k;
}

std::vector<float> host_values(const Tensor& t) { return t.to_vector<float>(); }

class DeviceChannelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (prism::gpu::backend() != prism::gpu::Backend::kHost) {
      GTEST_SKIP() << "logical GPUs only on the host backend: socket channels move their memory";
    }
  }
  std::unique_ptr<PairTransport> transport_ = prism::gpu::internal::make_socket_transport();
  std::unique_ptr<DeviceChannels> sender_ = make_channels(*transport_);
  std::unique_ptr<DeviceChannels> receiver_ = make_channels(*transport_);
  const void* tag_ = prism::internal::Placement<Tensor>::live_tag();
};

TEST_F(DeviceChannelsTest, ATensorCrossesToAnotherGpuAndIsKeptLiveThere) {
  const Kept k = kept_on(0, 100001, 0.5f);
  SendWaiter sent;
  const DeviceChannels::Offer offer = sender_->send(7, k.tensor, tag_, 0, 1, sent.callback());
  ASSERT_NE(offer.comm, 0u);
  EXPECT_EQ(offer.seq, 1u);
  EXPECT_FALSE(offer.id.empty()) << "a new communicator's id goes with its first offer";
  ReceiveWaiter received;
  receiver_->receive(3, offer, k.stub, 1, received.callback());
  const Received r = received.get();
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(sent.get(), "");
  EXPECT_EQ(r.tensor.device(), Device::gpu(1));
  EXPECT_FALSE(r.tensor.shares_storage(*k.tensor));
  EXPECT_EQ(host_values(r.tensor), host_values(*k.tensor));
  EXPECT_EQ(r.tag, tag_);
  EXPECT_EQ(r.wire_bytes, prism::internal::Placement<Tensor>::wire_bytes(*k.tensor));
  EXPECT_EQ(r.stub, k.stub) << "kept under the same stub as on the sending side";

  // The next transfer on that pair of GPUs reuses the communicator: no id.
  const Kept k2 = kept_on(0, 3, 9.0f);
  SendWaiter sent2;
  const DeviceChannels::Offer offer2 = sender_->send(7, k2.tensor, tag_, 0, 1, sent2.callback());
  EXPECT_EQ(offer2.comm, offer.comm);
  EXPECT_EQ(offer2.seq, 2u);
  EXPECT_TRUE(offer2.id.empty());
  ReceiveWaiter received2;
  receiver_->receive(3, offer2, k2.stub, 1, received2.callback());
  EXPECT_EQ(host_values(received2.get().tensor), (std::vector<float>{9, 10, 11}));
  EXPECT_EQ(sent2.get(), "");
  // Another pair (to gpu:2 of the same peer, or to another peer) has a communicator of its own.
  SendWaiter sent3;
  const DeviceChannels::Offer offer3 = sender_->send(7, k2.tensor, tag_, 0, 2, sent3.callback());
  EXPECT_NE(offer3.comm, offer.comm);
  EXPECT_FALSE(offer3.id.empty());
  ReceiveWaiter received3;
  receiver_->receive(3, offer3, k2.stub, 2, received3.callback());
  EXPECT_EQ(received3.get().tensor.device(), Device::gpu(2));
  EXPECT_EQ(sent3.get(), "");
}

// Offers may arrive in any order, the one with the communicator's id included: each side runs
// its transfers in the sender's order.
TEST_F(DeviceChannelsTest, TransfersRunInTheSendersOrderWhateverOrderTheOffersArriveIn) {
  constexpr int kTransfers = 6;
  std::vector<Kept> kept;
  std::vector<DeviceChannels::Offer> offers;
  std::vector<std::unique_ptr<SendWaiter>> sent;
  for (int i = 0; i < kTransfers; ++i) {
    kept.push_back(kept_on(1, 20000 + i * 7, static_cast<float>(i * 1000)));
    sent.push_back(std::make_unique<SendWaiter>());
    offers.push_back(sender_->send(5, kept.back().tensor, tag_, 1, 0, sent.back()->callback()));
    ASSERT_EQ(offers.back().seq, static_cast<uint64_t>(i + 1));
  }
  std::vector<std::unique_ptr<ReceiveWaiter>> received(kTransfers);
  for (int i : {3, 5, 0, 4, 2, 1}) {
    received[i] = std::make_unique<ReceiveWaiter>();
    receiver_->receive(9, offers[i], kept[i].stub, 0, received[i]->callback());
  }
  for (int i = 0; i < kTransfers; ++i) {
    const Received r = received[i]->get();
    ASSERT_EQ(r.error, "") << i;
    EXPECT_EQ(host_values(r.tensor), host_values(*kept[i].tensor)) << i;
    EXPECT_EQ(sent[i]->get(), "") << i;
  }
}

// An offer the receiving side refuses (here a stub that is not a kept tensor's) breaks its
// communicator there: the transfers after it are refused at once rather than wait for it.
TEST_F(DeviceChannelsTest, ARefusedOfferBreaksItsCommunicatorSoTheNextOnesAreRefusedAtOnce) {
  const Kept k = kept_on(0, 1000, 1.0f);
  for (const bool joined_first : {false, true}) {
    SCOPED_TRACE(joined_first ? "refused after a transfer" : "refused first");
    const int gpu = joined_first ? 2 : 1;  // (a pair of its own: a communicator of its own)
    std::vector<DeviceChannels::Offer> offers;
    for (int i = 0; i < 3; ++i) {
      offers.push_back(sender_->send(4, k.tensor, tag_, 0, gpu, [](const std::string&) {}));
    }
    size_t next = 0;
    if (joined_first) {
      ReceiveWaiter good;
      receiver_->receive(4, offers[next++], k.stub, gpu, good.callback());
      EXPECT_EQ(good.get().error, "");
    }
    ReceiveWaiter bad_stub;
    receiver_->receive(4, offers[next++], "\x01", gpu, bad_stub.callback());
    EXPECT_NE(bad_stub.get().error.find("malformed"), std::string::npos);
    ReceiveWaiter after;
    receiver_->receive(4, offers[next], k.stub, gpu, after.callback());
    EXPECT_NE(after.get().error.find("refused"), std::string::npos);
  }
}

TEST_F(DeviceChannelsTest, OffersThatBreakTheProtocolAreRefusedAtOnce) {
  const Kept k = kept_on(0, 1000, 1.0f);
  SendWaiter sent;
  DeviceChannels::Offer offer = sender_->send(4, k.tensor, tag_, 0, 1, sent.callback());
  ReceiveWaiter good;
  receiver_->receive(4, offer, k.stub, 1, good.callback());
  EXPECT_EQ(good.get().error, "");
  EXPECT_EQ(sent.get(), "");
  // The same transfer again, and its communicator's id again.
  ReceiveWaiter twice;
  receiver_->receive(4, offer, k.stub, 1, twice.callback());
  EXPECT_NE(twice.get().error, "");
  // On a GPU of this side without channels.
  ReceiveWaiter no_gpu;
  receiver_->receive(4, DeviceChannels::Offer{99, 1, "x"}, k.stub, -1, no_gpu.callback());
  EXPECT_NE(no_gpu.get().error.find("no device channel"), std::string::npos);
  // Values the channels do not move are not offered: a host tensor, another type, a mismatched
  // GPU.
  auto host = std::make_shared<Tensor>(Tensor::from_vector(std::vector<float>{1}, {1},
                                                           Device::host()));
  EXPECT_EQ(sender_->send(4, host, tag_, 0, 1, [](const std::string&) {}).comm, 0u);
  static const char kOther = 0;
  EXPECT_EQ(sender_->send(4, k.tensor, &kOther, 0, 1, [](const std::string&) {}).comm, 0u);
  EXPECT_EQ(sender_->send(4, k.tensor, tag_, 1, 1, [](const std::string&) {}).comm, 0u);
}

// A peer that goes away, or channels closing, end what waits on them: never a hang.
TEST_F(DeviceChannelsTest, ForgettingAPeerOrClosingEndsEveryTransferWaitingOnIt) {
  const Kept k = kept_on(0, 5000, 2.0f);
  SendWaiter sent1, sent2;
  const DeviceChannels::Offer first = sender_->send(8, k.tensor, tag_, 0, 1, sent1.callback());
  const DeviceChannels::Offer second = sender_->send(8, k.tensor, tag_, 0, 1, sent2.callback());
  // The receiver hears of the second only: it waits for the first, which never comes.
  DeviceChannels::Offer joined = second;
  joined.id = first.id;
  ReceiveWaiter waiting;
  receiver_->receive(2, joined, k.stub, 1, waiting.callback());
  receiver_->forget(2);
  EXPECT_NE(waiting.get().error, "");
  // The sender's first transfer waits for a receiver that is gone: closing ends it and the next.
  sender_->close();
  EXPECT_NE(sent1.get(), "");
  EXPECT_NE(sent2.get(), "");
  EXPECT_EQ(sender_->send(8, k.tensor, tag_, 0, 1, [](const std::string&) {}).comm, 0u)
      << "closed channels offer nothing";
  ReceiveWaiter after;
  receiver_->close();
  receiver_->receive(2, first, k.stub, 1, after.callback());
  EXPECT_NE(after.get().error, "");
}

// The staged path's receiving end: a tensor's serialized form, in parts, lands on a GPU as the
// parts are written; it is kept as a received one is (same stub, a live value on that GPU).
TEST_F(DeviceChannelsTest, ATensorsFormInPartsLandsOnAGpuPartByPart) {
  const Kept k = kept_on(0, 300001, 3.0f);
  std::string form;
  prism::internal::encode_value(*k.tensor, &form);
  ASSERT_EQ(form.size(), prism::internal::Placement<Tensor>::wire_bytes(*k.tensor));
  auto landing = receiver_->land(std::string_view(form).substr(0, 1000), form.size(), 2);
  ASSERT_NE(landing, nullptr);
  // Parts of odd sizes, the first one header and a few elements; each kept by its own owner.
  for (const auto& [from, to] : {std::pair<size_t, size_t>{0, 1000}, {1000, 500003},
                                 {500003, form.size()}}) {
    auto part = std::make_shared<std::string>(form.substr(from, to - from));
    landing->write(from, *part, part);
  }
  EXPECT_THROW(landing->write(0, "x", nullptr), prism::Error) << "a part after the last";
  ReceiveWaiter landed;
  landing->finish(landed.callback());
  const Received r = landed.get();
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.tensor.device(), Device::gpu(2));
  EXPECT_EQ(host_values(r.tensor), host_values(*k.tensor));
  EXPECT_EQ(r.stub, k.stub);
  EXPECT_EQ(r.wire_bytes, form.size());

  // Not a tensor's form, a header cut short, a size that does not add up: not landed.
  EXPECT_EQ(receiver_->land(std::string("\x00", 1), 1, 0), nullptr);
  EXPECT_EQ(receiver_->land("hello, world", 100, 0), nullptr);
  EXPECT_EQ(receiver_->land(std::string_view(form).substr(0, 5), form.size(), 0), nullptr);
  EXPECT_EQ(receiver_->land(std::string_view(form).substr(0, 1000), form.size() + 1, 0), nullptr);
  EXPECT_EQ(receiver_->land(std::string_view(form).substr(0, 1000), form.size(), -1), nullptr);

  // Parts out of order are refused; a landing finished short of its size fails; one dropped
  // half-way calls nothing.
  auto out_of_order = receiver_->land(std::string_view(form).substr(0, 1000), form.size(), 0);
  ASSERT_NE(out_of_order, nullptr);
  EXPECT_THROW(out_of_order->write(1000, std::string_view(form).substr(1000, 10), nullptr),
               prism::Error);
  auto part = std::make_shared<std::string>(form.substr(0, 1000));
  out_of_order->write(0, *part, part);
  ReceiveWaiter short_one;
  out_of_order->finish(short_one.callback());
  EXPECT_NE(short_one.get().error.find("ended after 1000"), std::string::npos);
  auto dropped = receiver_->land(std::string_view(form).substr(0, 1000), form.size(), 0);
  dropped->write(0, *part, part);
  dropped.reset();
  // Closing drops what the landing thread had not run: a landing finished then hears of it.
  auto closing = receiver_->land(std::string_view(form).substr(0, 1000), form.size(), 1);
  auto whole = std::make_shared<std::string>(form);
  closing->write(0, *whole, whole);
  ReceiveWaiter at_close;
  closing->finish(at_close.callback());
  receiver_->close();
  const Received c = at_close.get();
  EXPECT_TRUE(c.error.empty() || c.error.find("closed") != std::string::npos) << c.error;
}

// A transport whose joins fail (NCCL failing to initialise): the transfer fails, the pair's
// channel is broken for good, and later values for that pair are not offered (staged instead).
class FailingJoins final : public PairTransport {
 public:
  uint8_t kind() const noexcept override { return 2; }
  bool usable(int device) const noexcept override { return device >= 0; }
  std::string new_id() override { return "id" + std::to_string(++ids_); }
  std::unique_ptr<prism::gpu::internal::PairComm> join(const std::string&, int, int,
                                                       const prism::gpu::internal::Stop&) override {
    throw prism::Error(prism::ErrorCode::kUnavailable, "cannot initialise");
  }

 private:
  int ids_ = 0;
};

TEST_F(DeviceChannelsTest, AChannelThatCannotBeJoinedFailsItsTransfersAndOffersNoMore) {
  FailingJoins failing;
  auto channels = make_channels(failing);
  const Kept k = kept_on(0, 10, 1.0f);
  SendWaiter sent;
  const DeviceChannels::Offer offer = channels->send(1, k.tensor, tag_, 0, 0, sent.callback());
  ASSERT_NE(offer.comm, 0u);
  EXPECT_NE(sent.get().find("cannot initialise"), std::string::npos);
  EXPECT_EQ(channels->send(1, k.tensor, tag_, 0, 0, [](const std::string&) {}).comm, 0u);
  // Another pair is tried anew.
  SendWaiter other;
  EXPECT_NE(channels->send(1, k.tensor, tag_, 0, 1, other.callback()).comm, 0u);
  EXPECT_NE(other.get(), "");
  // And the receiving side of a communicator that cannot be joined fails its transfers too.
  ReceiveWaiter received;
  channels->receive(6, offer, k.stub, 0, received.callback());
  EXPECT_NE(received.get().error.find("cannot initialise"), std::string::npos);
}

#ifdef PRISM_GPU_CUDA
// NCCL's library loads (the toolkit's copy at least) and makes unique ids without a GPU: all of
// NCCL that runs here. Joins and transfers need GPUs (scripts/gpu_check.sh).
TEST(NcclPairsTest, TheLibraryLoadsAndMakesCommunicatorIds) {
  std::string why;
  std::unique_ptr<PairTransport> nccl = prism::gpu::internal::make_nccl_transport(&why);
  ASSERT_NE(nccl, nullptr) << why;
  EXPECT_EQ(nccl->kind(), 1);
  const std::string a = nccl->new_id();
  const std::string b = nccl->new_id();
  EXPECT_EQ(a.size(), 128u);
  EXPECT_NE(a, b);
  // A malformed id is refused before any device is touched.
  std::atomic<bool> abort{false};
  const prism::gpu::internal::Stop stop{&abort, std::chrono::steady_clock::now() + 5s};
  try {
    (void)nccl->join("short", 1, 0, stop);
    ADD_FAILURE() << "a malformed id was joined";
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("wrong size"), std::string::npos) << e.what();
  }
}
#endif

}  // namespace
