// bench/stencil.cc — task-graph efficiency sweep (what the Task Bench paper calls METG): the
// smallest task a system runs at 50% efficiency, on the same dependency graph, in the same run,
// for Prism, oneTBB's flow graph and OpenMP tasks with depend clauses (GCC's libgomp).
//
// The graph: `width` columns (8, and at least 4x the CPUs, so that a neighbour pattern is not a
// barrier) by `steps` rows (1,000). Task (t, i) runs a kernel of a chosen length on a seed made
// from its inputs' values. Patterns:
//   trivial    no dependencies (width x steps independent tasks)
//   stencil    (t, i) depends on (t-1, i-1), (t-1, i), (t-1, i+1)
//   nearest5   (t, i) depends on (t-1, i-2) .. (t-1, i+2)
// (clamped at the edges, duplicates removed). For each kernel length, from long to tiny, every
// system runs the whole graph `runs` times (more for short graphs: at least 0.3 s of each
// system's runs), interleaved, each measured run right after a discarded one of the same system
// (the other systems' threads idle, its own warm); a run's rate is kernel work per second
// (tasks x length / wall time). Efficiency = rate / peak, the peak being the best median rate
// any system reached at the longest kernel (one common peak: a slow system is not flattered by
// its own). Task granularity = wall time x CPUs / tasks. METG(50%) = the granularity where the
// efficiency falls through 50%, interpolated in log space between the two lengths around it.
//
//   build/bench/bench/stencil [--runs=N] [--quick] [--filter=stencil|trivial|nearest5]
//                             [--lengths=0.5,0.2] [--prism_only]
// --lengths: only these kernel lengths (us; the first is the peak's), --prism_only: no peers
// (both for profiling one point: bench/profile.sh "(stencil)" stencil --lengths=0.2 --prism_only
// --runs=100).
#include <prism/prism.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"

#ifdef PRISM_HAVE_TBB
#include <oneapi/tbb/flow_graph.h>
#endif
#ifdef PRISM_HAVE_OPENMP
#include <omp.h>
#endif

namespace {

constexpr double kMinMeasured_s = 0.3;  // per system and kernel length, at least
constexpr int kMaxRounds = 60;       // (unless --runs asks for more)

enum class Pattern { kTrivial, kStencil, kNearest5 };

struct Graph {
  Graph(Pattern p, int w, int s) : pattern(p), width(w), steps(s), inputs_(static_cast<size_t>(w)) {
    const int reach = pattern == Pattern::kStencil ? 1 : pattern == Pattern::kNearest5 ? 2 : -1;
    for (int i = 0; i < width; ++i) {
      std::vector<int>& out = inputs_[static_cast<size_t>(i)];
      for (int d = -reach; d <= reach; ++d) {
        const int j = std::clamp(i + d, 0, width - 1);
        if (std::find(out.begin(), out.end(), j) == out.end()) out.push_back(j);
      }
    }
  }
  Pattern pattern;
  int width;
  int steps;
  // Columns of step t-1 that (t, i) reads, without duplicates. (Made once: every system reads
  // them inside its timed run, which then times no allocation of the harness's own.)
  const std::vector<int>& inputs(int i) const { return inputs_[static_cast<size_t>(i)]; }
  int64_t tasks() const { return static_cast<int64_t>(width) * steps; }

 private:
  std::vector<std::vector<int>> inputs_;
};

// The task bodies: a seed from the inputs, then the kernel.
uint64_t cell0(uint64_t iters, uint64_t seed) { return bench::spin_kernel(iters, seed); }
uint64_t cell1(uint64_t iters, const uint64_t& a) { return bench::spin_kernel(iters, a); }
uint64_t cell2(uint64_t iters, const uint64_t& a, const uint64_t& b) {
  return bench::spin_kernel(iters, a + b);
}
uint64_t cell3(uint64_t iters, const uint64_t& a, const uint64_t& b, const uint64_t& c) {
  return bench::spin_kernel(iters, a + b + c);
}
uint64_t cell4(uint64_t iters, const uint64_t& a, const uint64_t& b, const uint64_t& c,
               const uint64_t& d) {
  return bench::spin_kernel(iters, a + b + c + d);
}
uint64_t cell5(uint64_t iters, const uint64_t& a, const uint64_t& b, const uint64_t& c,
               const uint64_t& d, const uint64_t& e) {
  return bench::spin_kernel(iters, a + b + c + d + e);
}
PRISM_REMOTE(cell0, cell1, cell2, cell3, cell4, cell5);

// ---- the three systems, one run each; return the wall time in seconds ----

double run_prism(const Graph& g, uint64_t iters, uint64_t* checksum) {
  using Ref = prism::ObjectRef<uint64_t>;
  const double t0 = bench::now_s();
  std::vector<Ref> prev(static_cast<size_t>(g.width)), cur(prev.size()), all;
  if (g.pattern == Pattern::kTrivial) all.reserve(static_cast<size_t>(g.tasks()));
  for (int t = 0; t < g.steps; ++t) {
    for (int i = 0; i < g.width; ++i) {
      if (g.pattern == Pattern::kTrivial) {  // (no step reads another: the refs go to `all` only)
        all.push_back(prism::task(cell0).remote(iters, static_cast<uint64_t>(t * g.width + i)));
        continue;
      }
      Ref r;
      if (t == 0) {
        r = prism::task(cell0).remote(iters, static_cast<uint64_t>(t * g.width + i));
      } else {
        const std::vector<int>& in = g.inputs(i);
        auto p = [&](size_t k) -> const Ref& { return prev[static_cast<size_t>(in[k])]; };
        switch (in.size()) {
          case 1: r = prism::task(cell1).remote(iters, p(0)); break;
          case 2: r = prism::task(cell2).remote(iters, p(0), p(1)); break;
          case 3: r = prism::task(cell3).remote(iters, p(0), p(1), p(2)); break;
          case 4: r = prism::task(cell4).remote(iters, p(0), p(1), p(2), p(3)); break;
          default: r = prism::task(cell5).remote(iters, p(0), p(1), p(2), p(3), p(4)); break;
        }
      }
      cur[static_cast<size_t>(i)] = std::move(r);
    }
    std::swap(prev, cur);
  }
  // The results waited for at once (as the peers' wait_for_all and the parallel region's end
  // do): one wait, not one per result.
  uint64_t sum = 0;
  for (const uint64_t x : prism::get(g.pattern == Pattern::kTrivial ? all : prev)) sum += x;
  const double wall = bench::now_s() - t0;
  *checksum = sum;
  return wall;
}

// The same values the Prism run computes, for the peers (their own storage).
inline uint64_t seed_of(const Graph& g, const std::vector<uint64_t>& v, int t, int i) {
  if (t == 0 || g.pattern == Pattern::kTrivial) return static_cast<uint64_t>(t * g.width + i);
  uint64_t s = 0;
  for (int j : g.inputs(i)) s += v[static_cast<size_t>((t - 1) * g.width + j)];
  return s;
}

uint64_t result_sum(const Graph& g, const std::vector<uint64_t>& v) {
  uint64_t sum = 0;
  const int first = g.pattern == Pattern::kTrivial ? 0 : (g.steps - 1) * g.width;
  for (int64_t k = first; k < g.tasks(); ++k) sum += v[static_cast<size_t>(k)];
  return sum;
}

#ifdef PRISM_HAVE_TBB
double run_tbb(const Graph& g, uint64_t iters, uint64_t* checksum) {
  using Node = tbb::flow::continue_node<tbb::flow::continue_msg>;
  std::vector<uint64_t> v(static_cast<size_t>(g.tasks()));
  const double t0 = bench::now_s();
  {
    tbb::flow::graph graph;
    std::vector<std::unique_ptr<Node>> nodes(static_cast<size_t>(g.tasks()));
    for (int t = 0; t < g.steps; ++t) {
      for (int i = 0; i < g.width; ++i) {
        const size_t k = static_cast<size_t>(t * g.width + i);
        nodes[k] = std::make_unique<Node>(
            graph, [&g, &v, iters, t, i, k](const tbb::flow::continue_msg&) {
              v[k] = bench::spin_kernel(iters, seed_of(g, v, t, i));
              return tbb::flow::continue_msg();
            });
        if (t > 0 && g.pattern != Pattern::kTrivial) {
          for (int j : g.inputs(i)) {
            tbb::flow::make_edge(*nodes[static_cast<size_t>((t - 1) * g.width + j)], *nodes[k]);
          }
        }
      }
    }
    const int roots = g.pattern == Pattern::kTrivial ? g.steps * g.width : g.width;
    for (int k = 0; k < roots; ++k) nodes[static_cast<size_t>(k)]->try_put(tbb::flow::continue_msg());
    graph.wait_for_all();
  }
  const double wall = bench::now_s() - t0;
  *checksum = result_sum(g, v);
  return wall;
}
#endif

#ifdef PRISM_HAVE_OPENMP
double run_openmp(const Graph& g, uint64_t iters, int cpus, uint64_t* checksum) {
  std::vector<uint64_t> v(static_cast<size_t>(g.tasks()));
  uint64_t* d = v.data();
  const int w = g.width;
  const double t0 = bench::now_s();
#pragma omp parallel num_threads(cpus)
#pragma omp single
  for (int t = 0; t < g.steps; ++t) {
    for (int i = 0; i < w; ++i) {
      const int k = t * w + i;
      if (t == 0 || g.pattern == Pattern::kTrivial) {
#pragma omp task firstprivate(k) depend(out : d[k])
        d[k] = bench::spin_kernel(iters, static_cast<uint64_t>(k));
      } else {
        // Fixed-size depend lists: clamped neighbours repeat a column, which OpenMP allows.
        const int p = (t - 1) * w;
        const int a = p + std::max(i - 2, 0), b = p + std::max(i - 1, 0), c = p + i,
                  e = p + std::min(i + 1, w - 1), f = p + std::min(i + 2, w - 1);
        if (g.pattern == Pattern::kStencil) {
#pragma omp task firstprivate(t, i, k) depend(in : d[b], d[c], d[e]) depend(out : d[k])
          d[k] = bench::spin_kernel(iters, seed_of(g, v, t, i));
        } else {
#pragma omp task firstprivate(t, i, k) depend(in : d[a], d[b], d[c], d[e], d[f]) \
    depend(out : d[k])
          d[k] = bench::spin_kernel(iters, seed_of(g, v, t, i));
        }
      }
    }
  }
  const double wall = bench::now_s() - t0;
  *checksum = result_sum(g, v);
  return wall;
}
#endif

const char* name_of(Pattern p) {
  return p == Pattern::kTrivial ? "trivial" : p == Pattern::kStencil ? "stencil" : "nearest5";
}

struct Curve {
  std::vector<double> rate;         // kernel-us per second, median, per length
  std::vector<double> granularity;  // us of core time per task, median, per length
};

// The granularity at which efficiency (rate / peak) falls through 0.5; NaN if it never reaches
// 0.5; the smallest measured granularity if it never falls below.
double metg(const Curve& c, double peak) {
  for (size_t k = 0; k < c.rate.size(); ++k) {
    const double eff = c.rate[k] / peak;
    if (eff >= 0.5) continue;
    if (k == 0) return NAN;
    const double e0 = c.rate[k - 1] / peak, e1 = eff;  // e0 >= 0.5 > e1
    const double g0 = std::log(c.granularity[k - 1]), g1 = std::log(c.granularity[k]);
    return std::exp(g0 + (g1 - g0) * (e0 - 0.5) / (e0 - e1));
  }
  return c.granularity.back();
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv);
  const int cpus = static_cast<int>(std::thread::hardware_concurrency());
  prism::init({.num_cpus = static_cast<double>(cpus)});
  bench::Report report("stencil", flags);
  report.fact("prism_num_cpus", std::to_string(cpus));
  const double per_us = bench::spin_kernel_iters_per_us();
  const int width = std::max(8, 4 * cpus);
  const int steps = flags.quick ? 100 : 1000;
  std::vector<double> lengths_us = {100, 30, 10, 5, 3, 2, 1.5, 1, 0.7, 0.5, 0.3, 0.2, 0.1};
  const std::string only = flags.get("--lengths", "");
  const bool full_sweep = only.empty();
  if (!full_sweep) {
    lengths_us.clear();
    for (size_t at = 0; at < only.size();) {
      const size_t comma = std::min(only.find(',', at), only.size());
      lengths_us.push_back(std::atof(only.substr(at, comma - at).c_str()));
      at = comma + 1;
    }
  }
  [[maybe_unused]] const bool prism_only = flags.get("--prism_only", "") == "1" ||
                          std::find(flags.rest.begin(), flags.rest.end(), "--prism_only") !=
                              flags.rest.end();
  const int runs = std::max(3, flags.runs);
  std::printf("stencil sweep: width %d, %d steps, %d CPUs, kernel %.0f iterations per us\n",
              width, steps, cpus, per_us);

  for (Pattern pattern : {Pattern::kStencil, Pattern::kTrivial, Pattern::kNearest5}) {
    const std::string name = name_of(pattern);
    if (!flags.wants("stencil sweep (" + name + ")")) continue;
    const Graph g(pattern, width, steps);
    struct System {
      std::string name;
      std::function<double(uint64_t, uint64_t*)> run;
      Curve curve;
    };
    std::vector<System> systems;
    systems.push_back({"Prism", [&](uint64_t it, uint64_t* s) { return run_prism(g, it, s); }, {}});
#ifdef PRISM_HAVE_OPENMP
    if (!prism_only) {
      systems.push_back({"OpenMP tasks",
                         [&](uint64_t it, uint64_t* s) { return run_openmp(g, it, cpus, s); }, {}});
    }
#endif
#ifdef PRISM_HAVE_TBB
    if (!prism_only) {
      systems.push_back(
          {"oneTBB flow graph", [&](uint64_t it, uint64_t* s) { return run_tbb(g, it, s); }, {}});
    }
#endif
    std::printf("\n%s: kernel us | per system: efficiency later; median wall s (granularity us)\n",
                name.c_str());
    for (double len : lengths_us) {
      const uint64_t iters = std::max<uint64_t>(1, static_cast<uint64_t>(len * per_us));
      const double work_us = static_cast<double>(g.tasks()) * static_cast<double>(iters) / per_us;
      std::vector<std::vector<double>> walls(systems.size());
      uint64_t reference = 0;
      double longest = 0;  // warm-up; the slowest system's run sets the number of rounds
      for (size_t s = 0; s < systems.size(); ++s) {
        longest = std::max(longest, systems[s].run(iters, &reference));
      }
      // Short graphs (a few ms) run more rounds, at least kMinMeasured_s of each system's runs,
      // so that the points where efficiency crosses 50% are medians of many runs, not noise.
      const int rounds = std::max(
          runs, std::min(kMaxRounds, static_cast<int>(std::ceil(kMinMeasured_s / longest))));
      for (int r = 0; r < rounds; ++r) {  // interleaved: drifting load hits every system alike
        for (size_t s = 0; s < systems.size(); ++s) {
          uint64_t sum = 0;
          // A run of its own first, discarded: the last system's threads (libgomp's and oneTBB's
          // spin for a while after their work) are idle by its end, and this system's are warm.
          (void)systems[s].run(iters, &sum);
          walls[s].push_back(systems[s].run(iters, &sum));
          if (sum != reference) {
            std::fprintf(stderr, "%s %s: wrong result (%llu, expected %llu)\n", name.c_str(),
                         systems[s].name.c_str(), static_cast<unsigned long long>(sum),
                         static_cast<unsigned long long>(reference));
            return 1;
          }
        }
      }
      std::printf("  %6.2f", len);
      for (size_t s = 0; s < systems.size(); ++s) {
        const double wall = bench::stats_of(walls[s]).median;
        systems[s].curve.rate.push_back(work_us / wall);
        systems[s].curve.granularity.push_back(wall * 1e6 * cpus / static_cast<double>(g.tasks()));
        std::printf(" | %s %.4f s (%.2f us)", systems[s].name.c_str(), wall,
                    systems[s].curve.granularity.back());
      }
      std::printf("\n");
    }
    double peak = 0;
    for (const System& s : systems) peak = std::max(peak, s.curve.rate.front());
    std::printf("  efficiency (peak %.3g kernel-us/s):\n", peak);
    for (size_t k = 0; k < lengths_us.size(); ++k) {
      std::printf("  %6.2f", lengths_us[k]);
      for (const System& s : systems) {
        std::printf(" | %s %.2f", s.name.c_str(), s.curve.rate[k] / peak);
      }
      std::printf("\n");
    }
    // One row per peer: Prism's METG beside that peer's, from the same run (not for a few
    // lengths of --lengths: the first of them would stand for the peak).
    if (!full_sweep) {
      std::printf("  (--lengths: no METG)\n");
      continue;
    }
    const double prism_metg = metg(systems[0].curve, peak);
    for (size_t s = 1; s < std::max<size_t>(systems.size(), 2); ++s) {
      const bool has_peer = s < systems.size();
      bench::Row row("stencil sweep (" + name + "): METG(50%)" +
                         (has_peer ? " vs " + systems[s].name : std::string()),
                     "us");
      row.higher_is_better = false;
      if (!std::isnan(prism_metg)) row.prism = bench::stats_of({prism_metg});
      if (pattern == Pattern::kStencil) row.target = bench::Target{"<= 1.3 us", 1.3, false};
      if (has_peer) {
        row.peer_name = systems[s].name;
        const double m = metg(systems[s].curve, peak);
        if (!std::isnan(m)) row.peer = bench::stats_of({m});
      }
      row.extras.emplace_back("Prism efficiency at 100 us", systems[0].curve.rate.front() / peak);
      row.note = std::to_string(width) + " x " + std::to_string(steps) +
                 " tasks; smallest task (us of core time) at 50% of the best rate at 100 us";
      report.add(std::move(row));
    }
  }
  report.finish();
  prism::shutdown();
  return 0;
}
