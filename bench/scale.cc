// bench/scale.cc — how Prism's costs grow with the amount of work in flight.
//
//   build/release/bench/scale [--json=out.json] [--runs=5] [--max_n=1000000] [--filter=chain]
//
// Rows (each measured at sizes 10^4, 10^5, 10^6 up to --max_n; actors at a tenth of that):
//  * queued tasks: N tasks that each wait on one unresolved ref (a gate task blocked on a flag)
//    are submitted, then the gate is released. Reports bytes of resident memory per pending
//    task (RSS delta / N), the submission rate and the drain rate.
//  * actors: N actors created and each called once (actors/s, bytes per live actor).
//  * dependency chain: N tasks, each taking the previous one's result; the head is gated so
//    the whole chain is pending at once (bytes per pending link, submit and drain rates).
//  * fan-in: N tasks whose N refs go to one summing task (refs/s end to end).
// Each measurement runs in a fresh child process (fork before any thread exists), so one
// run's freed memory cannot hide the next run's growth. The row's figure is the median at the
// largest size; "per-item cost xG" says how the cost per item grows from the smallest size to
// the largest (1.0 is flat).
//
// Thread-safe: not applicable (a program).
#include <prism/prism.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"

namespace {

constexpr int kMaxFigures = 4;
using Figures = std::array<double, kMaxFigures>;

// Runs `measure` in a child process with its own Prism runtime; returns its figures.
Figures in_child(const std::function<Figures()>& measure) {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    prism::init({.num_cpus = static_cast<double>(std::thread::hardware_concurrency())});
    Figures f = measure();
    if (write(fds[1], f.data(), sizeof f) != static_cast<ssize_t>(sizeof f)) _exit(2);
    _exit(0);  // no teardown: the figures are out, the process is done
  }
  close(fds[1]);
  Figures f{};
  const ssize_t got = read(fds[0], f.data(), sizeof f);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (got != static_cast<ssize_t>(sizeof f) || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "scale: a measurement child failed (status %d)\n", status);
    std::exit(1);
  }
  return f;
}

// A ref that stays pending until open() is called: a task blocked on a flag. It holds one CPU
// slot while it waits; the tasks queued behind it hold nothing.
class Gate {
 public:
  Gate()
      : ref_(prism::task([this] {
               flag_.wait(false);
               return 0;
             }).remote()) {}
  const prism::ObjectRef<int>& ref() const { return ref_; }
  void open() {
    flag_.store(true);
    flag_.notify_all();
  }

 private:
  std::atomic<bool> flag_{false};
  prism::ObjectRef<int> ref_;
};

std::atomic<int64_t> g_done{0};
int consume(const int& gate_value) {
  g_done.fetch_add(1, std::memory_order_relaxed);
  return gate_value;
}
int inc(const int& x) { return x + 1; }
int ident(int x) { return x; }
int64_t sum(const std::vector<int>& v) {
  int64_t s = 0;
  for (int x : v) s += x;
  return s;
}

struct Counter {
  int calls = 0;
  int call() { return ++calls; }
};

void wait_until_done(int64_t n) {
  while (g_done.load(std::memory_order_relaxed) < n)
    std::this_thread::sleep_for(std::chrono::microseconds(50));
}

// Figures: bytes per pending task, submissions/s, drains/s.
Figures queued_tasks(int64_t n) {
  std::vector<prism::ObjectRef<int>> refs(static_cast<size_t>(n));  // the user's side, pre-faulted
  Gate gate;
  auto f = prism::task(consume);
  const int64_t rss0 = bench::rss_bytes();
  const double t0 = bench::now_s();
  for (auto& r : refs) r = f.remote(gate.ref());
  const double t1 = bench::now_s();
  const int64_t rss1 = bench::rss_bytes();
  gate.open();
  wait_until_done(n);
  const double t2 = bench::now_s();
  return {static_cast<double>(rss1 - rss0) / static_cast<double>(n), n / (t1 - t0), n / (t2 - t1),
          0};
}

// Figures: bytes per pending link, submissions/s, drains/s.
Figures chain(int64_t n) {
  Gate gate;
  auto f = prism::task(inc);
  const int64_t rss0 = bench::rss_bytes();
  const double t0 = bench::now_s();
  prism::ObjectRef<int> last = gate.ref();
  for (int64_t i = 0; i < n; ++i) last = f.remote(last);
  const double t1 = bench::now_s();
  const int64_t rss1 = bench::rss_bytes();
  gate.open();
  const int v = prism::get(last);
  const double t2 = bench::now_s();
  if (v != n) std::abort();
  return {static_cast<double>(rss1 - rss0) / static_cast<double>(n), n / (t1 - t0), n / (t2 - t1),
          0};
}

// Figures: actors/s (create + one call each, all gets), bytes per live actor.
Figures actors(int64_t n) {
  std::vector<prism::ActorHandle<Counter>> handles;
  handles.reserve(static_cast<size_t>(n));
  std::vector<prism::ObjectRef<int>> refs(static_cast<size_t>(n));
  const int64_t rss0 = bench::rss_bytes();
  const double t0 = bench::now_s();
  for (int64_t i = 0; i < n; ++i) handles.push_back(prism::actor<Counter>().remote());
  for (int64_t i = 0; i < n; ++i)
    refs[static_cast<size_t>(i)] = handles[static_cast<size_t>(i)].task(&Counter::call).remote();
  for (auto& r : refs)
    if (prism::get(r) != 1) std::abort();
  const double t1 = bench::now_s();
  const int64_t rss1 = bench::rss_bytes();
  return {n / (t1 - t0), static_cast<double>(rss1 - rss0) / static_cast<double>(n), 0, 0};
}

// Figures: refs/s end to end (N producer tasks, one consumer of all N).
Figures fan_in(int64_t n) {
  std::vector<prism::ObjectRef<int>> refs(static_cast<size_t>(n));
  auto f = prism::task(ident);
  const double t0 = bench::now_s();
  for (int64_t i = 0; i < n; ++i) refs[static_cast<size_t>(i)] = f.remote(static_cast<int>(i & 1));
  auto total = prism::task(sum).remote(refs);
  const int64_t s = prism::get(total);
  const double t1 = bench::now_s();
  if (s != n / 2) std::abort();
  return {n / (t1 - t0), 0, 0, 0};
}

struct Metric {
  const char* name;
  const char* unit;
  int figure;  // index into Figures
  bool rate;   // higher is better
};

// Measures `fn` at each size, `runs` times each, and adds one row per metric.
void measure(bench::Report& report, const bench::Flags& flags, const std::vector<int64_t>& sizes,
             const std::function<Figures(int64_t)>& fn, const std::vector<Metric>& metrics,
             const std::function<void(bench::Row&, const Metric&)>& decorate) {
  std::vector<std::vector<std::vector<double>>> per_metric(metrics.size());  // [metric][size][run]
  for (auto& m : per_metric) m.resize(sizes.size());
  for (size_t s = 0; s < sizes.size(); ++s) {
    for (int r = 0; r < flags.runs; ++r) {
      const Figures f = in_child([&] { return fn(sizes[s]); });
      for (size_t m = 0; m < metrics.size(); ++m)
        per_metric[m][s].push_back(f[static_cast<size_t>(metrics[m].figure)]);
    }
  }
  for (size_t m = 0; m < metrics.size(); ++m) {
    bench::Row row(metrics[m].name, metrics[m].unit);
    if (!metrics[m].rate) row.higher_is_better = false;
    for (size_t s = 0; s < sizes.size(); ++s)
      row.series.push_back(
          {static_cast<double>(sizes[s]), bench::stats_of(per_metric[m][s]).median});
    row.prism = bench::stats_of(per_metric[m].back());
    row.note = "figure at n = " + bench::fmt_num(static_cast<double>(sizes.back()));
    decorate(row, metrics[m]);
    report.add(std::move(row));
  }
}

std::vector<int64_t> decades(int64_t from, int64_t to) {
  std::vector<int64_t> v;
  for (int64_t n = from; n <= to; n *= 10) v.push_back(n);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv);
  const int64_t max_n = flags.max_n > 0 ? flags.max_n : (flags.quick ? 100'000 : 1'000'000);
  const int64_t min_n = std::min<int64_t>(10'000, max_n);
  bench::Report report("scale", flags);
  report.fact("prism_num_cpus", std::to_string(std::thread::hardware_concurrency()));
  report.print_header();
  auto none = [](bench::Row&, const Metric&) {};

  if (flags.wants("queued tasks")) {
    measure(report, flags, decades(min_n, max_n), queued_tasks,
            {{"queued tasks: memory per pending task", "B/task", 0, false},
             {"queued tasks: submission rate", "tasks/s", 1, true},
             {"queued tasks: drain rate", "tasks/s", 2, true}},
            [](bench::Row& row, const Metric& m) {
              if (m.figure == 0) {
                row.target = bench::Target{"<= 256 B/task", 256, false};
                row.note += "; RSS delta / pending tasks (arguments: one ObjectRef each)";
              }
            });
  }
  if (flags.wants("actors")) {
    const int64_t amax = std::max<int64_t>(max_n / 10, 1000);
    measure(report, flags, decades(std::min<int64_t>(1000, amax), amax), actors,
            {{"actors: created and called once", "actors/s", 0, true},
             {"actors: memory per live actor", "B/actor", 1, false}},
            none);
  }
  if (flags.wants("chain")) {
    measure(report, flags, decades(min_n, max_n), chain,
            {{"dependency chain: memory per pending link", "B/task", 0, false},
             {"dependency chain: submission rate", "tasks/s", 1, true},
             {"dependency chain: drain rate", "tasks/s", 2, true}},
            none);
  }
  if (flags.wants("fan-in")) {
    measure(report, flags, decades(min_n, max_n), fan_in,
            {{"fan-in: N refs into one task", "refs/s", 0, true}}, none);
  }
  report.finish();
  return 0;
}
