// bench/faults — what failures cost (fault tolerance), on a loopback cluster of this same
// executable (nodes started here by address, as the tests do; UCX pinned to loopback).
//
//   build/bench/bench/faults [--runs=5] [--json=PATH] [--quick]
//
// Rows:
//   - a killed node (SIGKILL): seconds from the kill to the failure of a call in flight there
//     (max_retries(0), so that it fails instead of running again): the peer error's latency;
//   - a stopped node (SIGSTOP) with PRISM_HEARTBEAT_TIMEOUT=1: seconds from the stop to the same
//     failure (the deadline itself is 1 s; heartbeats go out each 0.2 s);
//   - a lost chain of 8 results (1 MiB each, each computed from the one before) rebuilt from
//     lineage after its node was killed: seconds from the kill to the last value read here,
//     beside the same chain computed and read the first time (the peer);
//   - spilling: the object table writing 64 MiB copies to files (its spill) and reading them
//     back (mapped, every byte read), in GB/s, beside plain write() and read() of the same
//     sizes to files in the same directory, same run.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <prism/prism.h>

#include "bench_nodes.h"
#include "bench_util.h"
#include "object_table.h"

namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1 << 20;

int64_t sleep_ms(int64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));  // stands for work
  return ms;
}
std::vector<uint8_t> first_link(uint64_t n) { return std::vector<uint8_t>(n, 1); }
std::vector<uint8_t> next_link(const std::vector<uint8_t>& v) {
  std::vector<uint8_t> out(v);
  for (auto& b : out) b = static_cast<uint8_t>(b * 3 + 1);
  return out;
}
PRISM_REMOTE(sleep_ms, first_link, next_link);

// One run of a detection row: a node with `resource`, a call in flight there, then `signal`;
// seconds until the call fails.
double detect(const std::string& dir, int signal) {
  const pid_t node = bench::spawn_node(
      dir, {"PRISM_NUM_CPUS=1", "PRISM_RESOURCES=victim:1", "PRISM_HEARTBEAT_TIMEOUT=1"});
  prism::wait_for_nodes(1, 60s);
  // (in flight from its submission: the driver sent it at once)
  auto r = prism::task(sleep_ms).resource("victim", 1).max_retries(0).remote(int64_t{60'000});
  const double t0 = bench::now_s();
  kill(node, signal);
  double t = -1;
  try {
    prism::get(r, 30s);
  } catch (const prism::TimeoutError&) {
  } catch (const prism::Error&) {
    t = bench::now_s() - t0;
  }
  kill(node, SIGKILL);
  bench::reap({node});
  return t;
}

// One run of the chain row: the chain computed on node A (seconds, *first), then node B joins,
// A is killed, and the last link is read again (seconds, returned).
double rebuild_chain(const std::string& dir, int links, double* first) {
  std::vector<pid_t> nodes{bench::spawn_node(dir, {"PRISM_NUM_CPUS=1", "PRISM_RESOURCES=chain:1"})};
  prism::wait_for_nodes(1, 60s);
  // First: the chain, then a task reading its last link (all on A), read here.
  double t0 = bench::now_s();
  prism::ObjectRef<std::vector<uint8_t>> last;
  {
    auto x = prism::task(first_link).resource("chain", 1).remote(kMiB);
    for (int i = 1; i < links; ++i) x = prism::task(next_link).resource("chain", 1).remote(x);
    last = x;
  }  // (only the last link's ref is kept: the others have only their lineage)
  const size_t bytes =
      prism::get(prism::task(next_link).resource("chain", 1).remote(last), 60s).size();
  *first = bench::now_s() - t0;
  nodes.push_back(bench::spawn_node(dir, {"PRISM_NUM_CPUS=1", "PRISM_RESOURCES=chain:1"}));
  prism::wait_for_nodes(2, 60s);
  // Then A dies with every link, and the same reader runs on B: the chain is computed again
  // there from its lineage first.
  t0 = bench::now_s();
  kill(nodes[0], SIGKILL);
  const size_t again =
      prism::get(prism::task(next_link).resource("chain", 1).remote(last), 60s).size();
  const double t = bench::now_s() - t0;
  if (again != bytes) std::fprintf(stderr, "chain: wrong size after the rebuild\n");
  last = {};
  kill(nodes[1], SIGKILL);
  bench::reap(nodes);
  // (both nodes gone: the next run starts from none)
  const auto deadline = bench::now_s() + 30;
  while (prism::node_count() > 1 && bench::now_s() < deadline) std::this_thread::sleep_for(5ms);
  return t;
}

uint64_t sum_words(const char* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    s += w;
  }
  return s;
}

struct SpillRun {
  double write_gbs = 0, read_gbs = 0, plain_write_gbs = 0, plain_read_gbs = 0;
};

SpillRun spill_run(const std::string& dir, int copies, uint64_t bytes) {
  SpillRun r;
  std::vector<std::string> data;
  for (int i = 0; i < copies; ++i) data.emplace_back(bytes, static_cast<char>('a' + i));
  const double total = static_cast<double>(copies) * static_cast<double>(bytes) / 1e9;
  uint64_t check = 0;
  // Plain files.
  {
    const std::string plain = dir + "/plain-" + std::to_string(getpid());
    std::filesystem::create_directories(plain);
    double t0 = bench::now_s();
    for (int i = 0; i < copies; ++i) {
      const int fd = ::open((plain + "/" + std::to_string(i)).c_str(),
                            O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      const char* p = data[static_cast<size_t>(i)].data();
      size_t left = bytes;
      while (left > 0) {
        const ssize_t n = ::write(fd, p, left);
        if (n <= 0) break;
        p += n;
        left -= static_cast<size_t>(n);
      }
      ::close(fd);
    }
    r.plain_write_gbs = total / (bench::now_s() - t0);
    std::string buf(bytes, '\0');
    t0 = bench::now_s();
    for (int i = 0; i < copies; ++i) {
      const int fd = ::open((plain + "/" + std::to_string(i)).c_str(), O_RDONLY | O_CLOEXEC);
      size_t got = 0;
      while (got < bytes) {
        const ssize_t n = ::read(fd, buf.data() + got, bytes - got);
        if (n <= 0) break;
        got += static_cast<size_t>(n);
      }
      ::close(fd);
      check += sum_words(buf.data(), got);
    }
    r.plain_read_gbs = total / (bench::now_s() - t0);
    std::filesystem::remove_all(plain);
  }
  // The object table's spill (every copy beyond a 1-byte capacity goes to a file at once).
  {
    prism::cluster::ObjectTable table;
    table.set_spill(1, dir);
    std::vector<prism::cluster::Blob> blobs;
    for (auto& d : data) blobs.push_back(prism::cluster::make_blob(std::move(d)));
    data.clear();
    double t0 = bench::now_s();
    for (int i = 0; i < copies; ++i) {
      table.hold(static_cast<uint64_t>(i + 1), std::move(blobs[static_cast<size_t>(i)]), true);
    }
    r.write_gbs = total / (bench::now_s() - t0);
    if (table.stats().spilled_objects != static_cast<uint64_t>(copies)) {
      std::fprintf(stderr, "spill: only %llu of %d copies spilled\n",
                   static_cast<unsigned long long>(table.stats().spilled_objects), copies);
    }
    t0 = bench::now_s();
    for (int i = 0; i < copies; ++i) {
      prism::cluster::Blob b = table.find(static_cast<uint64_t>(i + 1));
      if (b) check += sum_words(b->view.data(), b->size());
    }
    r.read_gbs = total / (bench::now_s() - t0);
  }
  bench::keep(check);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  setenv("UCX_NET_DEVICES", "lo", 0);
  prism::serve();  // a node: serves the driver below, then exits
  bench::Flags flags(argc, argv);
  bench::Report report("faults", flags);
  const int links = 8;

  const std::string dir = "/tmp/prism-bench-faults-" + std::to_string(getpid());
  setenv("PRISM_JOB_DIR", dir.c_str(), 1);
  setenv("PRISM_HEARTBEAT_TIMEOUT", "1", 1);
  prism::init({.num_cpus = 1, .listen = "127.0.0.1:0"});

  bench::Row killed = bench::Row("dead node detected: SIGKILL", "s").lower_is_better().with_note(
      "from the kill to the failure of a call in flight there (a peer error: no timer)");
  if (flags.wants(killed.name)) {
    killed.prism = bench::repeat(flags.runs, [&] { return detect(dir, SIGKILL); });
    report.add(std::move(killed));
  }
  bench::Row stopped =
      bench::Row("dead node detected: SIGSTOP, 1 s deadline", "s").lower_is_better().with_note(
          "from the stop to the failure of a call in flight there (PRISM_HEARTBEAT_TIMEOUT=1)");
  if (flags.wants(stopped.name)) {
    stopped.prism = bench::repeat(flags.runs, [&] { return detect(dir, SIGSTOP); });
    report.add(std::move(stopped));
  }
  bench::Row chain = bench::Row("lost chain of 8 x 1 MiB rebuilt (lineage)", "s")
                         .lower_is_better()
                         .with_peer("the same chain computed the first time")
                         .with_note("from the kill to a task on the new node reading the last "
                                    "link, and its result read here");
  if (flags.wants(chain.name)) {
    std::vector<double> firsts;
    chain.prism = bench::repeat(flags.runs, [&] {
      double first = 0;
      const double t = rebuild_chain(dir, links, &first);
      firsts.push_back(first);
      return t;
    });
    chain.peer = bench::stats_of(firsts);
    report.add(std::move(chain));
  }
  prism::shutdown();

  const char* tmp = std::getenv("TMPDIR");
  const std::string spill_dir = std::string(tmp != nullptr && *tmp ? tmp : "/tmp");
  const int copies = flags.quick ? 2 : 8;
  const uint64_t bytes = 64 * kMiB;
  std::vector<SpillRun> runs;
  for (int i = 0; i < flags.runs; ++i) runs.push_back(spill_run(spill_dir, copies, bytes));
  auto pick = [&](double SpillRun::*f) {
    std::vector<double> v;
    for (const SpillRun& r : runs) v.push_back(r.*f);
    return bench::stats_of(v);
  };
  const std::string size_note = std::to_string(copies) + " x 64 MiB to files in " + spill_dir;
  bench::Row write_row =
      bench::Row("spill write", "GB/s").with_peer("plain write() of the same files").with_note(size_note);
  write_row.prism = pick(&SpillRun::write_gbs);
  write_row.peer = pick(&SpillRun::plain_write_gbs);
  report.add(std::move(write_row));
  bench::Row read_row = bench::Row("spill restore (mapped, every byte read)", "GB/s")
                            .with_peer("plain read() of the same files")
                            .with_note(size_note);
  read_row.prism = pick(&SpillRun::read_gbs);
  read_row.peer = pick(&SpillRun::plain_read_gbs);
  report.add(std::move(read_row));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  report.finish();
  return 0;
}
