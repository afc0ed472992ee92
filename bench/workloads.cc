// bench/workloads.cc — the tutorial workloads, serial versus Prism, and the task-overhead view.
//
//   build/release/bench/workloads [--json=out.json] [--scale=0.2] [--matmul_n=1000]
//                                 [--pairs=400] [--images=50] [--image_size=3000]
//                                 [--image_dir=/tmp/prism-bench-images] [--filter=matmul]
//
// Workloads: sleep tasks, tree add, fibonacci, Monte Carlo pi, the serial GEMM the matmul rows
// are made of (GFLOP/s: the examples' product on OpenBLAS beside OpenBLAS's dgemm called directly
// and Eigen's built-in GEMM), matmul tree (4 matrices) and 400 products, image preprocessing of
// JPEGs. Each row runs the same work serially, with Prism and with a same-run peer (oneTBB
// task_groups over the same functions and allocations), interleaved in rotated rounds after a
// discarded warm-up (workload_row), and gives Prism's time against the peer's, the serial time,
// both speed-ups and the ideal speed-up on this machine (what the task graph allows on its CPU
// slots). --scale shortens the sleeping ones.
//
// Task overhead: a compute kernel of adjustable length (1 µs .. 10 ms) run as one Prism task
// per kernel, against a plain loop on N threads (each thread runs 1/N of the kernels) and
// against oneTBB (one task_group task per kernel). Efficiency = loop time / time; the summary
// row is the smallest kernel at which Prism still reaches 50%.
//
// Matmul and images reuse the example programs' workload headers (examples/workloads/) when
// Eigen3 and libjpeg were found.
//
// Thread-safe: not applicable (a program).
#include <prism/prism.h>

#ifdef PRISM_HAVE_TBB
#include <oneapi/tbb/task_group.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"

#if defined(PRISM_HAVE_EIGEN3) && __has_include("../examples/workloads/matmul.h")
#include "../examples/workloads/matmul.h"
#define BENCH_HAVE_MATMUL 1
#endif
#if defined(PRISM_HAVE_JPEG) && __has_include("../examples/workloads/images.h")
#include "../examples/workloads/images.h"
#define BENCH_HAVE_IMAGES 1
#endif

namespace {

// ---- the workload functions (the tutorial's; see examples/ for the annotated programs) ----

int sleep_task(int index, double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return index;
}

int add(int x, int y, double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return x + y;
}

uint64_t fibonacci_list(int n, int rounds) {
  uint64_t last = 0;
  for (int r = 0; r < rounds; ++r) {
    std::vector<uint64_t> fib;
    for (int i = 0; i < n; ++i)
      fib.push_back(i < 2 ? static_cast<uint64_t>(i)
                          : fib[static_cast<size_t>(i - 1)] + fib[static_cast<size_t>(i - 2)]);
    last = fib.back();
  }
  return last;
}

int64_t count_inside(int64_t samples, uint64_t seed) {
  std::mt19937_64 gen(seed);
  int64_t inside = 0;
  for (int64_t i = 0; i < samples; ++i) {
    const double x = static_cast<double>(gen() >> 11) * 0x1.0p-53;
    const double y = static_cast<double>(gen() >> 11) * 0x1.0p-53;
    inside += x * x + y * y <= 1.0;
  }
  return inside;
}

// The length of the schedule that gives each task, longest first, to the slot free first.
double lpt_schedule(std::vector<double> tasks, int slots) {
  std::sort(tasks.begin(), tasks.end(), std::greater<>());
  std::vector<double> load(static_cast<size_t>(slots), 0.0);
  for (double t : tasks) *std::min_element(load.begin(), load.end()) += t;
  return *std::max_element(load.begin(), load.end());
}

double time_of(const std::function<void()>& f) {
  const double t0 = bench::now_s();
  f();
  return bench::now_s() - t0;
}

// The serial baseline and the peer (whose caller runs tasks too) run on a thread of their own,
// like a task does: the main thread's malloc
// arena behaves differently (it gives big blocks back to the system at once, so a loop that
// allocates pays page faults again on every round), which would flatter Prism.
double time_on_thread(const std::function<void()>& f) {
  double t = 0;
  std::thread([&] { t = time_of(f); }).join();
  return t;
}

// What this machine gives a parallel program right now: the speed-up of `cpus` plain threads
// each running a ~30 ms kernel over running them one after another. On a machine shared with
// other busy processes this is well below `cpus`, and so is every speed-up measured then.
double threads_speedup_now(int cpus) {
  const uint64_t iters = 20'000'000;
  auto serial = [&] {
    for (int t = 0; t < cpus; ++t) bench::keep(bench::spin_kernel(iters, static_cast<uint64_t>(t)));
  };
  auto threads = [&] {
    std::vector<std::thread> ts;
    for (int t = 0; t < cpus; ++t)
      ts.emplace_back([&, t] { bench::keep(bench::spin_kernel(iters, static_cast<uint64_t>(t))); });
    for (auto& th : ts) th.join();
  };
  const double s = time_of(serial);
  return s / time_of(threads);
}

// One workload three ways: serial, with Prism, and with the same-run peer (oneTBB: the same
// functions, the same allocations, a task_group task where Prism has a task; empty without
// oneTBB).
struct Runs {
  std::function<void()> serial, prism, peer;
};

#ifdef PRISM_HAVE_TBB
constexpr const char* kPeerName = "oneTBB task_group";
// Runs each of `bodies` as a oneTBB task and waits for all.
void tbb_all(const std::vector<std::function<void()>>& bodies) {
  tbb::task_group tg;
  for (const auto& b : bodies) tg.run(b);
  tg.wait();
}
#endif

// One row: Prism's time against the peer's (the ratio column: peer s / Prism s, > 1 when Prism
// is faster), with the serial time, both speed-ups and the ideal one. The three are run in
// rounds: a warm-up round (discarded: it fills caches, the allocator and the thread pools), then
// 2 to 5 timed rounds, as many as fit in about a minute, each in a rotated order (serial, Prism,
// peer; Prism, peer, serial; peer, serial, Prism; ...) so that neither order nor warm-up favours
// one; each is reported as its median.
void workload_row(bench::Report& report, const std::string& name, const Runs& runs,
                  const std::function<double(double serial_s)>& ideal_speedup,
                  const std::string& note) {
  const double machine = threads_speedup_now(static_cast<int>(std::thread::hardware_concurrency()));
  std::vector<std::function<double()>> timed = {[&] { return time_on_thread(runs.serial); },
                                                [&] { return time_of(runs.prism); }};
  // (the peer's caller runs tasks itself in wait(), so it runs on a fresh thread, as the serial
  // run does)
  if (runs.peer) timed.push_back([&] { return time_on_thread(runs.peer); });
  double warm_up_s = 0;
  for (const auto& t : timed) warm_up_s += t();
  const int rounds = std::clamp(static_cast<int>(60.0 / std::max(warm_up_s, 1e-3)), 2, 5);
  std::vector<std::vector<double>> seconds(timed.size());
  for (int r = 0; r < rounds; ++r) {
    for (size_t k = 0; k < timed.size(); ++k) {
      const size_t which = (k + static_cast<size_t>(r)) % timed.size();
      seconds[which].push_back(timed[which]());
    }
  }
  const bench::Stats serial = bench::stats_of(seconds[0]);
  bench::Row row(name, "s");
  row.higher_is_better = false;
  row.prism = bench::stats_of(seconds[1]);
  if (runs.peer) {
#ifdef PRISM_HAVE_TBB
    row.peer_name = kPeerName;
#endif
    row.peer = bench::stats_of(seconds[2]);
  } else {
    row.peer_name = "serial";  // (built without oneTBB)
    row.peer = serial;
  }
  const double speedup = serial.median / row.prism.median, ideal = ideal_speedup(serial.median);
  row.extras = {{"serial_s", serial.median},
                {"speedup", speedup},
                {"ideal_speedup", ideal},
                {"fraction_of_ideal", speedup / ideal},
                {"threads_speedup_now", machine},
                {"rounds", static_cast<double>(rounds)}};
  if (runs.peer) row.extras.emplace_back("peer_speedup", serial.median / row.peer.median);
  row.note = note;
  report.add(std::move(row));
}

void workloads(bench::Report& report, const bench::Flags& flags, int cpus) {
  const double scale = std::atof(flags.get("--scale", flags.quick ? "0.05" : "0.2").c_str());

  if (flags.wants("sleep tasks")) {
    std::vector<double> secs = {0.1, 0.2, 0.1, 0.5, 0.7, 0.9, 0.5, 0.4,
                                1.5, 1.3, 1.0, 0.3, 0.7, 0.6, 0.3, 0.8};
    double total = 0;
    for (double& s : secs) total += (s *= scale);
    auto serial = [&] {
      for (size_t i = 0; i < secs.size(); ++i)
        bench::keep(sleep_task(static_cast<int>(i), secs[i]));
    };
    auto parallel = [&] {
      std::vector<prism::ObjectRef<int>> refs;
      for (size_t i = 0; i < secs.size(); ++i)
        refs.push_back(prism::task(sleep_task).remote(static_cast<int>(i), secs[i]));
      bench::keep(prism::get(refs).size());
    };
    Runs runs{serial, parallel, {}};
#ifdef PRISM_HAVE_TBB
    runs.peer = [&] {
      std::vector<int> out(secs.size());
      std::vector<std::function<void()>> bodies;
      for (size_t i = 0; i < secs.size(); ++i)
        bodies.push_back([&, i] { out[i] = sleep_task(static_cast<int>(i), secs[i]); });
      tbb_all(bodies);
      bench::keep(out.size());
    };
#endif
    workload_row(
        report, "sleep tasks", runs,
        [&](double) { return total / lpt_schedule(secs, cpus); },
        "16 sleeps, 9.9 s x scale " + bench::fmt_num(scale) + " in all; ideal: LPT schedule");
  }

  if (flags.wants("tree add")) {
    const double unit = scale;
    auto serial = [&] {
      int s = add(1, 2, unit);
      for (int v = 3; v <= 8; ++v) s = add(s, v, unit);
      bench::keep(s);
    };
    auto parallel = [&] {
      std::vector<prism::ObjectRef<int>> values;
      for (int v = 1; v <= 8; ++v) values.push_back(prism::put(v));
      while (values.size() > 1) {
        auto sum = prism::task(add).remote(values[0], values[1], unit);
        values.erase(values.begin(), values.begin() + 2);
        values.push_back(sum);
      }
      if (prism::get(values[0]) != 36) std::abort();
    };
    Runs runs{serial, parallel, {}};
#ifdef PRISM_HAVE_TBB
    runs.peer = [&] {  // the same pairing, a level at a time (each level's adds at once)
      std::vector<int> values = {1, 2, 3, 4, 5, 6, 7, 8};
      while (values.size() > 1) {
        std::vector<int> sums(values.size() / 2);
        std::vector<std::function<void()>> bodies;
        for (size_t k = 0; k < sums.size(); ++k)
          bodies.push_back([&, k] { sums[k] = add(values[2 * k], values[2 * k + 1], unit); });
        tbb_all(bodies);
        values = std::move(sums);
      }
      if (values[0] != 36) std::abort();
    };
#endif
    auto rounds = [&](int adds) { return (adds + cpus - 1) / cpus; };
    workload_row(
        report, "tree add", runs,
        [&](double) { return 7.0 / (rounds(4) + rounds(2) + rounds(1)); },
        "8 values, 7 adds of " + bench::fmt_num(unit) + " s; ideal: tree depth on " +
            std::to_string(cpus) + " slots");
  }

  if (flags.wants("fibonacci")) {
    const int n = 200'000, rounds = flags.quick ? 10 : 100;
    auto serial = [&] {
      for (int t = 0; t < cpus; ++t) bench::keep(fibonacci_list(n, rounds));
    };
    auto parallel = [&] {
      std::vector<prism::ObjectRef<uint64_t>> refs;
      for (int t = 0; t < cpus; ++t) refs.push_back(prism::task(fibonacci_list).remote(n, rounds));
      bench::keep(prism::get(refs).size());
    };
    Runs runs{serial, parallel, {}};
#ifdef PRISM_HAVE_TBB
    runs.peer = [&] {
      std::vector<uint64_t> out(static_cast<size_t>(cpus));
      std::vector<std::function<void()>> bodies;
      for (int t = 0; t < cpus; ++t) bodies.push_back([&, t] { out[t] = fibonacci_list(n, rounds); });
      tbb_all(bodies);
      bench::keep(out.size());
    };
#endif
    workload_row(
        report, "fibonacci", runs, [&](double) { return double(cpus); },
        "one task per CPU, 200k numbers x " + std::to_string(rounds) + " rounds each");
  }

  if (flags.wants("monte carlo pi")) {
    const int64_t samples = flags.quick ? 1'000'000 : 10'000'000;
    auto serial = [&] {
      for (int t = 0; t < cpus; ++t)
        bench::keep(count_inside(samples, 2024 + static_cast<uint64_t>(t)));
    };
    auto parallel = [&] {
      std::vector<prism::ObjectRef<int64_t>> refs;
      for (int t = 0; t < cpus; ++t)
        refs.push_back(prism::task(count_inside).remote(samples, 2024 + static_cast<uint64_t>(t)));
      bench::keep(prism::get(refs).size());
    };
    Runs runs{serial, parallel, {}};
#ifdef PRISM_HAVE_TBB
    runs.peer = [&] {
      std::vector<int64_t> out(static_cast<size_t>(cpus));
      std::vector<std::function<void()>> bodies;
      for (int t = 0; t < cpus; ++t)
        bodies.push_back([&, t] { out[t] = count_inside(samples, 2024 + static_cast<uint64_t>(t)); });
      tbb_all(bodies);
      bench::keep(out.size());
    };
#endif
    workload_row(
        report, "monte carlo pi", runs, [&](double) { return double(cpus); },
        "one task per CPU, " + bench::fmt_num(static_cast<double>(samples)) + " samples each");
  }

#ifdef BENCH_HAVE_MATMUL
  namespace mm = examples::matmul;
  using mm::Matrix;
  const int mn = std::atoi(flags.get("--matmul_n", flags.quick ? "300" : "1000").c_str());
  // The product every matmul row is made of, alone on one thread: what the examples' path
  // (gemm.h: a fresh result matrix, OpenBLAS's dgemm on one thread) reaches, beside OpenBLAS's
  // dgemm straight into a ready buffer, and Eigen's built-in GEMM (what the examples used before).
  if (flags.wants("serial gemm")) {
    const Matrix a = mm::create_matrix(mn, 7), b = mm::create_matrix(mn, 8);
    const double flop = 2.0 * mn * mn * mn;
    auto gflops = [&](const std::function<void()>& product) {
      return bench::repeat(flags.runs, [&] {
        const double t0 = bench::now_s();
        product();
        return flop / (bench::now_s() - t0) / 1e9;
      });
    };
    bench::Row row("serial gemm " + std::to_string(mn) + "^3 float64", "GFLOP/s");
    row.prism = gflops([&] { bench::keep(mm::multiply_matrices(a, b).data()); });
#if PRISM_HAVE_OPENBLAS
    row.peer_name = "OpenBLAS dgemm, one thread";
    Matrix c(mn, mn);
    row.peer = gflops([&] {
      const double one = 1.0, zero = 0.0;
      dgemm_("N", "N", &mn, &mn, &mn, &one, a.data(), &mn, b.data(), &mn, &zero, c.data(), &mn);
      bench::keep(c.data());
    });
#endif
    const bench::Stats eigen = gflops([&] {
      Matrix c2(mn, mn);
      c2.noalias() = a * b;
      bench::keep(c2.data());
    });
    row.extras = {{"eigen_builtin_gflops", eigen.median}};
    row.note = examples::gemm::backend() + "; Eigen's built-in GEMM: " +
               bench::fmt_num(eigen.median) + " GFLOP/s";
    report.add(std::move(row));
  }
  if (flags.wants("matmul tree")) {
    double critical = 0;
    auto serial = [&] { bench::keep(mm::tree_serial(mn, 1, &critical).size()); };
    auto parallel = [&] { bench::keep(mm::tree_prism(mn, 1).size()); };
    Runs runs{serial, parallel, {}};
#ifdef PRISM_HAVE_TBB
    runs.peer = [&] {  // the tree a level at a time: 4 creates, 2 products, the sum
      Matrix x[4], p[2];
      tbb_all({[&] { x[0] = mm::create_matrix(mn, 2); }, [&] { x[1] = mm::create_matrix(mn, 3); },
               [&] { x[2] = mm::create_matrix(mn, 4); }, [&] { x[3] = mm::create_matrix(mn, 5); }});
      tbb_all({[&] { p[0] = mm::multiply_matrices(x[0], x[1]); },
               [&] { p[1] = mm::multiply_matrices(x[2], x[3]); }});
      bench::keep(mm::sum_matrices(p[0], p[1]).size());
    };
#endif
    workload_row(
        report, "matmul tree (4 matrices)", runs,
        [&](double s) { return std::min<double>(s / critical, cpus); },
        std::to_string(mn) + "x" + std::to_string(mn) +
            " doubles; ideal: serial / critical path, at most the CPUs");
  }
  if (flags.wants("matmul pairs")) {
    const int pairs = std::atoi(flags.get("--pairs", flags.quick ? "20" : "400").c_str());
    double critical = 0;
    auto serial = [&] { bench::keep(mm::many_serial(mn, pairs, 1, &critical).traces.size()); };
    auto parallel = [&] {
      bench::keep(mm::many_prism(mn, pairs, 1, static_cast<size_t>(2 * cpus)).traces.size());
    };
    Runs runs{serial, parallel, {}};
#ifdef PRISM_HAVE_TBB
    runs.peer = [&] {  // a task per pair (x and y created at once), gathered as each ends
      mm::Gathered g{Matrix::Zero(mn, mn), std::vector<double>(static_cast<size_t>(pairs))};
      std::mutex gather;
      tbb::task_group tg;
      for (int i = 0; i < pairs; ++i) {
        tg.run([&, i] {
          Matrix x, y;
          tbb_all({[&] { x = mm::create_matrix(mn, 1 + 2 * i); },
                   [&] { y = mm::create_matrix(mn, 1 + 2 * i + 1); }});
          const Matrix z = mm::multiply_matrices(x, y);
          std::lock_guard<std::mutex> lock(gather);
          g.traces[static_cast<size_t>(i)] = z.trace();
          g.sum += z;
        });
      }
      tg.wait();
      bench::keep(g.traces.size());
    };
#endif
    workload_row(
        report, "matmul " + std::to_string(pairs) + " pairs", runs,
        [&](double) { return double(cpus); },
        std::to_string(pairs) + " x (2 creates + 1 product) of " + std::to_string(mn) + "x" +
            std::to_string(mn) + "; window " + std::to_string(2 * cpus));
  }
#else
  std::printf("(matmul rows skipped: built without Eigen3 or examples/workloads/matmul.h)\n");
#endif

#ifdef BENCH_HAVE_IMAGES
  if (flags.wants("image preprocessing")) {
    namespace im = examples::images;
    const int count = std::atoi(flags.get("--images", flags.quick ? "8" : "50").c_str());
    const int size = std::atoi(flags.get("--image_size", flags.quick ? "1000" : "3000").c_str());
    const std::string dir =
        flags.get("--image_dir", "/tmp/prism-bench-images") + "/" + std::to_string(size);
    const uint64_t seed = 7;
    im::ensure_images(dir, count, size);  // not timed; generated once and kept
    for (bool full : {false, true}) {
      double longest = 0;
      auto serial = [&] {
        bench::keep(im::preprocess_serial(dir, count, seed, full, &longest).size());
      };
      auto parallel = [&] { bench::keep(im::preprocess_prism(dir, count, seed, full).size()); };
      Runs runs{serial, parallel, {}};
#ifdef PRISM_HAVE_TBB
      runs.peer = [&] {
        std::vector<examples::img::Tensor> out(static_cast<size_t>(count));
        std::vector<std::function<void()>> bodies;
        for (int i = 0; i < count; ++i) {
          bodies.push_back(
              [&, i] { out[i] = im::preprocess_image(im::path(dir, i), seed + i, full); });
        }
        tbb_all(bodies);
        bench::keep(out.size());
      };
#endif
      workload_row(
          report, std::string("image preprocessing") + (full ? " (full decode)" : " (crop decode)"),
          runs, [&](double s) { return std::min<double>(s / longest, cpus); },
          std::to_string(count) + " JPEGs of " + std::to_string(size) + "x" + std::to_string(size) +
              ": read, decode, flip, crop 224, normalize");
    }
  }
#else
  std::printf("(image rows skipped: built without libjpeg or examples/workloads/images.h)\n");
#endif
}

// ---- task overhead ----


void task_overhead(bench::Report& report, const bench::Flags& flags, int cpus) {
  if (!flags.wants("task overhead")) return;
  const double per_us = bench::spin_kernel_iters_per_us();
  const double total_s = flags.quick ? 0.05 : 0.25;  // CPU time of one run's kernels in all
  const std::vector<double> lengths_us = {0.2, 0.5, 1,   2,   5,    10,   20,
                                          50,  100, 200, 500, 1000, 10000};
  std::vector<uint64_t> out;
  std::vector<double> prism_eff, peer_eff;  // median efficiency per length
  for (double len : lengths_us) {
    const uint64_t iters = static_cast<uint64_t>(len * per_us);
    const int64_t k =
        std::clamp<int64_t>(static_cast<int64_t>(total_s * cpus * 1e6 / len), 4 * cpus, 1'000'000);
    out.assign(static_cast<size_t>(k), 0);
    auto loop_run = [&] {
      return time_of([&] {
        std::vector<std::thread> ts;
        for (int t = 0; t < cpus; ++t)
          ts.emplace_back([&, t] {
            for (int64_t i = k * t / cpus; i < k * (t + 1) / cpus; ++i)  // a block each
              out[static_cast<size_t>(i)] = bench::spin_kernel(iters, static_cast<uint64_t>(i));
          });
        for (auto& th : ts) th.join();
      });
    };
    auto prism_run = [&] {
      return time_of([&] {
        std::vector<prism::ObjectRef<uint64_t>> refs(static_cast<size_t>(k));
        auto f = prism::task(bench::spin_kernel);
        for (int64_t i = 0; i < k; ++i)
          refs[static_cast<size_t>(i)] = f.remote(iters, static_cast<uint64_t>(i));
        for (int64_t i = 0; i < k; ++i)
          out[static_cast<size_t>(i)] = prism::get(refs[static_cast<size_t>(i)]);
      });
    };
#ifdef PRISM_HAVE_TBB
    auto tbb_run = [&] {
      return time_of([&] {
        tbb::task_group tg;
        for (int64_t i = 0; i < k; ++i)
          tg.run([&out, iters, i] {
            out[static_cast<size_t>(i)] = bench::spin_kernel(iters, static_cast<uint64_t>(i));
          });
        tg.wait();
      });
    };
#endif
    const int runs = std::max(3, flags.runs);
    std::vector<double> loop_t, prism_t, tbb_t;
    loop_run();  // warm-up
    prism_run();
    for (int r = 0; r < runs; ++r) {  // interleaved, so drifting machine load hits all alike
      loop_t.push_back(loop_run());
      prism_t.push_back(prism_run());
#ifdef PRISM_HAVE_TBB
      tbb_t.push_back(tbb_run());
#endif
    }
    const bench::Stats loop = bench::stats_of(loop_t);
    bench::Row row("task overhead: kernel " + bench::fmt_num(len) + " us", "efficiency");
    std::vector<double> eff;
    for (double t : prism_t) eff.push_back(loop.median / t);
    row.prism = bench::stats_of(eff);
    prism_eff.push_back(row.prism.median);
#ifdef PRISM_HAVE_TBB
    std::vector<double> tbb_eff;
    for (double t : tbb_t) tbb_eff.push_back(loop.median / t);
    row.peer_name = "tbb::task_group";
    row.peer = bench::stats_of(tbb_eff);
    peer_eff.push_back(row.peer.median);
#endif
    row.extras = {{"tasks", static_cast<double>(k)}, {"loop_s", loop.median}};
    row.note = std::to_string(k) + " kernels per run; efficiency = plain loop on " +
               std::to_string(cpus) + " threads / time";
    report.add(std::move(row));
  }
  // The smallest length from which on every longer kernel reaches 50% (NaN: none does).
  auto threshold = [&](const std::vector<double>& eff) {
    double best = NAN;
    for (size_t i = eff.size(); i-- > 0 && eff[i] >= 0.5;) best = lengths_us[i];
    return best;
  };
  const double prism_50 = threshold(prism_eff), tbb_50 = threshold(peer_eff);
  bench::Row summary("task overhead: smallest task at 50% efficiency", "us");
  summary.higher_is_better = false;
  if (!std::isnan(prism_50)) summary.prism = bench::stats_of({prism_50});
#ifdef PRISM_HAVE_TBB
  summary.peer_name = "tbb::task_group";
  if (!std::isnan(tbb_50)) summary.peer = bench::stats_of({tbb_50});
#endif
  summary.note =
      "smallest kernel length tried from which on every length reaches 50% median efficiency";
  report.add(std::move(summary));
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv);
  const int cpus = static_cast<int>(std::thread::hardware_concurrency());
  prism::init({.num_cpus = static_cast<double>(cpus)});
  bench::Report report("workloads", flags);
  report.fact("prism_num_cpus", std::to_string(cpus));
  report.print_header();
  workloads(report, flags, cpus);
  task_overhead(report, flags, cpus);
  report.finish();
  prism::shutdown();
  return 0;
}
