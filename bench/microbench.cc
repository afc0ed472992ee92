// bench/microbench.cc — Ray's microbenchmark rows, measured on Prism (embedded mode) and, in the
// same process run, on the in-process native peer (oneTBB's task_group, a mutex-guarded object
// for actor calls, memcpy for bulk puts).
//
//   build/release/bench/microbench [--json=out.json] [--runs=5] [--trial_s=0.2] [--filter=actor]
//                                  [--no_peer]   (Prism only, e.g. under perf)
//
// Row names are Ray's (python/ray/_private/ray_perf.py), so figures can be set side by side
// with Ray's published ones, which are printed as a reference column: they come from a 64-vCPU
// machine, not this one. Each row is the median of --runs runs (after one warm-up run); a run
// repeats the row's operation for at least --trial_s seconds.
//
// Thread-safe: not applicable (a program).
#include <prism/prism.h>

#ifdef PRISM_HAVE_TBB
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/version.h>
#endif

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"

namespace {

constexpr int kBatch = 10'000;             // tasks or calls per async operation
constexpr int kClients = 4;                // submitting threads of the multi-client / n:n rows
constexpr int kActors = 4;                 // actors of the 1:n and n:n rows
constexpr size_t kArgBytes = 1024;         // the argument of "n:n actor calls with arg async"
constexpr size_t kPutBytes = 800'000'000;  // "put gigabytes": Ray's 800 MB array

int small_value() { return 0; }

struct Actor {
  int small_value() { return 0; }
  int small_value_arg(const std::string& arg) { return static_cast<int>(arg.size()) & 0; }
};

// The peer's actor: a plain object behind a mutex.
struct GuardedActor {
  std::mutex mu;
  Actor actor;
  int call() {
    std::lock_guard<std::mutex> g(mu);
    return actor.small_value();
  }
  int call_arg(const std::string& arg) {
    std::lock_guard<std::mutex> g(mu);
    return actor.small_value_arg(arg);
  }
};

// An allocator that leaves new elements uninitialized: a big buffer that is never touched costs
// no page faults, so "put gigabytes (moved in)" times the put alone.
template <typename T>
struct NoInitAlloc : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = NoInitAlloc<U>;
  };
  NoInitAlloc() = default;
  template <typename U>
  NoInitAlloc(const NoInitAlloc<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};
using RawBuffer = std::vector<char, NoInitAlloc<char>>;

template <typename F>
void on_threads(int n, F&& f) {
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) threads.emplace_back([&f, i] { f(i); });
  for (auto& t : threads) t.join();
}

const std::map<std::string, double> kRayPublished = {
    {"single client tasks sync", 981},
    {"single client tasks async", 8041},
    {"multi client tasks async", 21230},
    {"1:1 actor calls sync", 2012},
    {"1:1 actor calls async", 8664},
    {"n:n actor calls async", 27376},
    {"single client put calls (Plasma Store)", 5173},
    {"single client get calls (Plasma Store)", 10620},
    {"single client put gigabytes", 19.9},
    {"single client wait 1k refs", 5.08},
};

class Suite {
 public:
  Suite(const bench::Flags& flags, bench::Report& report)
      : flags_(flags),
        report_(report),
        no_peer_(std::find(flags.rest.begin(), flags.rest.end(), "--no_peer") != flags.rest.end()) {
  }

  // Measures one row: Prism's run, then the peer's (each `runs` times after a warm-up).
  void row(bench::Row r, const std::function<double()>& prism_run,
           const std::function<double()>& peer_run = nullptr) {
    if (!flags_.wants(r.name)) return;
    if (auto it = kRayPublished.find(r.name); it != kRayPublished.end()) r.published = it->second;
    bench::settle();
    r.prism = bench::repeat(flags_.runs, prism_run);
    if (peer_run && !no_peer_) {
      bench::settle();
      r.peer = bench::repeat(flags_.runs, peer_run);
    } else {
      r.peer_name.clear();
    }
    report_.add(std::move(r));
  }
  double trial() const { return flags_.trial_s; }
  bool wants(const std::string& row) const { return flags_.wants(row); }

 private:
  const bench::Flags& flags_;
  bench::Report& report_;
  bool no_peer_;  // --no_peer: Prism rows only (for profiling)
};

void task_rows(Suite& s) {
  const double T = s.trial();
  auto f = prism::task(small_value);

  s.row(
      bench::Row("single client tasks sync", "ops/s")
          .with_peer("tbb::task_group")
          .at_least(200'000, ">= 200,000/s"),
      [&] { return bench::ops_per_s(T, 1, [&] { bench::keep(prism::get(f.remote())); }); }
#ifdef PRISM_HAVE_TBB
      ,
      [&] {
        tbb::task_group tg;
        int v = -1;
        return bench::ops_per_s(T, 1, [&] {
          tg.run([&v] { v = small_value(); });
          tg.wait();
          bench::keep(v);
        });
      }
#endif
  );

  std::vector<prism::ObjectRef<int>> refs(kBatch);
  std::vector<int> results(kBatch);
  auto prism_batch = [&](int n) {
    for (int i = 0; i < n; ++i) refs[static_cast<size_t>(i)] = f.remote();
    for (int i = 0; i < n; ++i)
      results[static_cast<size_t>(i)] = prism::get(refs[static_cast<size_t>(i)]);
  };
#ifdef PRISM_HAVE_TBB
  auto tbb_batch = [&](int n) {
    tbb::task_group tg;
    for (int i = 0; i < n; ++i)
      tg.run([&results, i] { results[static_cast<size_t>(i)] = small_value(); });
    tg.wait();
  };
#endif

  s.row(
      bench::Row("single client tasks async", "ops/s")
          .with_peer("tbb::task_group")
          .at_least(2'000'000, ">= 2,000,000/s")
          .goal(0.5)
          .with_note("10k tasks submitted, then all gets"),
      [&] { return bench::ops_per_s(T, kBatch, [&] { prism_batch(kBatch); }); }
#ifdef PRISM_HAVE_TBB
      ,
      [&] { return bench::ops_per_s(T, kBatch, [&] { tbb_batch(kBatch); }); }
#endif
  );

  // Any request but the default one CPU takes the shaped path (a lease per burst, not the
  // scheduler's lock per task): the same batch with num_cpus(0.25), against default tasks.
  auto quarter = prism::task(small_value).num_cpus(0.25);
  s.row(
      bench::Row("single client tasks async (0.25 CPU each)", "ops/s")
          .with_peer("the same tasks, default request")
          .goal(0.5)
          .with_note("10k tasks submitted, then all gets"),
      [&] {
        return bench::ops_per_s(T, kBatch, [&] {
          for (auto& r : refs) r = quarter.remote();
          for (size_t i = 0; i < refs.size(); ++i) results[i] = prism::get(refs[i]);
        });
      },
      [&] { return bench::ops_per_s(T, kBatch, [&] { prism_batch(kBatch); }); });

  s.row(
      bench::Row("single client tasks and get batch", "batches/s")
          .with_peer("tbb::task_group")
          .with_note("one op = 1,000 tasks then get of all"),
      [&] { return bench::ops_per_s(T, 1, [&] { prism_batch(1000); }); }
#ifdef PRISM_HAVE_TBB
      ,
      [&] { return bench::ops_per_s(T, 1, [&] { tbb_batch(1000); }); }
#endif
  );

  s.row(
      bench::Row("multi client tasks async", "ops/s")
          .with_peer("tbb::task_group")
          .with_note("4 submitting threads, 10k tasks each"),
      [&] {
        return bench::ops_per_s(T, kClients * kBatch, [&] {
          on_threads(kClients, [&](int) {
            std::vector<prism::ObjectRef<int>> mine(kBatch);
            for (auto& r : mine) r = f.remote();
            for (auto& r : mine) bench::keep(prism::get(r));
          });
        });
      }
#ifdef PRISM_HAVE_TBB
      ,
      [&] {
        return bench::ops_per_s(T, kClients * kBatch, [&] {
          on_threads(kClients, [&](int) {
            std::vector<int> mine(kBatch);
            tbb::task_group tg;
            for (int i = 0; i < kBatch; ++i)
              tg.run([&mine, i] { mine[static_cast<size_t>(i)] = small_value(); });
            tg.wait();
          });
        });
      }
#endif
  );
}

void actor_rows(Suite& s) {
  const double T = s.trial();
  auto make_actor = [](int concurrency = 1) {
    auto a = prism::actor<Actor>().max_concurrency(concurrency).remote();
    prism::get(a.task(&Actor::small_value).remote());  // constructed and warm
    return a;
  };
  auto one = make_actor();
  GuardedActor g_one;

  s.row(
      bench::Row("1:1 actor calls sync", "ops/s").with_peer("tbb::task_group + mutex"),
      [&] {
        auto m = one.task(&Actor::small_value);
        return bench::ops_per_s(T, 1, [&] { bench::keep(prism::get(m.remote())); });
      }
#ifdef PRISM_HAVE_TBB
      ,
      [&] {
        tbb::task_group tg;
        int v = -1;
        return bench::ops_per_s(T, 1, [&] {
          tg.run([&] { v = g_one.call(); });
          tg.wait();
          bench::keep(v);
        });
      }
#endif
  );

  std::vector<prism::ObjectRef<int>> refs(kBatch);
  auto prism_calls = [&](auto& handle) {
    auto m = handle.task(&Actor::small_value);
    for (auto& r : refs) r = m.remote();
    for (auto& r : refs) bench::keep(prism::get(r));
  };
#ifdef PRISM_HAVE_TBB
  std::vector<int> results(kBatch);
  auto tbb_calls = [&](GuardedActor* g, bool lock) {
    tbb::task_group tg;
    for (int i = 0; i < kBatch; ++i)
      tg.run([&results, g, lock, i] {
        results[static_cast<size_t>(i)] = lock ? g->call() : g->actor.small_value();
      });
    tg.wait();
  };
#endif

  s.row(
      bench::Row("1:1 actor calls async", "ops/s")
          .with_peer("tbb::task_group + mutex")
          .at_least(1'000'000, ">= 1,000,000/s")
          .with_note("10k calls, then all gets"),
      [&] { return bench::ops_per_s(T, kBatch, [&] { prism_calls(one); }); }
#ifdef PRISM_HAVE_TBB
      ,
      [&] { return bench::ops_per_s(T, kBatch, [&] { tbb_calls(&g_one, true); }); }
#endif
  );

  auto concurrent = make_actor(16);
  s.row(
      bench::Row("1:1 actor calls concurrent", "ops/s")
          .with_peer("tbb::task_group, no lock")
          .with_note("max_concurrency 16; 10k calls, then all gets"),
      [&] { return bench::ops_per_s(T, kBatch, [&] { prism_calls(concurrent); }); }
#ifdef PRISM_HAVE_TBB
      ,
      [&] { return bench::ops_per_s(T, kBatch, [&] { tbb_calls(&g_one, false); }); }
#endif
  );

  std::vector<prism::ActorHandle<Actor>> actors;
  for (int i = 0; i < kActors; ++i) actors.push_back(make_actor());
  std::vector<GuardedActor> guarded(kActors);

  s.row(
      bench::Row("1:n actor calls async", "ops/s")
          .with_peer("tbb::task_group + mutex")
          .at_least(2'000'000, ">= 2,000,000/s")
          .with_note("1 client, 4 actors, 10k calls round robin"),
      [&] {
        return bench::ops_per_s(T, kBatch, [&] {
          for (int i = 0; i < kBatch; ++i)
            refs[static_cast<size_t>(i)] =
                actors[static_cast<size_t>(i % kActors)].task(&Actor::small_value).remote();
          for (auto& r : refs) bench::keep(prism::get(r));
        });
      }
#ifdef PRISM_HAVE_TBB
      ,
      [&] {
        return bench::ops_per_s(T, kBatch, [&] {
          tbb::task_group tg;
          for (int i = 0; i < kBatch; ++i)
            tg.run([&, i] {
              results[static_cast<size_t>(i)] = guarded[static_cast<size_t>(i % kActors)].call();
            });
          tg.wait();
        });
      }
#endif
  );

  const std::string arg(kArgBytes, 'x');
  for (bool with_arg : {false, true}) {
    s.row(
        bench::Row(with_arg ? "n:n actor calls with arg async" : "n:n actor calls async", "ops/s")
            .with_peer("tbb::task_group + mutex")
            .with_note(with_arg ? "4 clients x 4 actors, 10k calls per client, 1 KB string argument"
                                : "4 clients x 4 actors, 10k calls per client"),
        [&] {
          return bench::ops_per_s(T, kClients * kBatch, [&] {
            on_threads(kClients, [&](int c) {
              std::vector<prism::ObjectRef<int>> mine(kBatch);
              for (int i = 0; i < kBatch; ++i) {
                const auto& a = actors[static_cast<size_t>((i + c) % kActors)];
                mine[static_cast<size_t>(i)] = with_arg
                                                   ? a.task(&Actor::small_value_arg).remote(arg)
                                                   : a.task(&Actor::small_value).remote();
              }
              for (auto& r : mine) bench::keep(prism::get(r));
            });
          });
        }
#ifdef PRISM_HAVE_TBB
        ,
        [&] {
          return bench::ops_per_s(T, kClients * kBatch, [&] {
            on_threads(kClients, [&](int c) {
              std::vector<int> mine(kBatch);
              tbb::task_group tg;
              for (int i = 0; i < kBatch; ++i) {
                GuardedActor* g = &guarded[static_cast<size_t>((i + c) % kActors)];
                if (with_arg) {
                  tg.run([&mine, g, i, a = arg] { mine[static_cast<size_t>(i)] = g->call_arg(a); });
                } else {
                  tg.run([&mine, g, i] { mine[static_cast<size_t>(i)] = g->call(); });
                }
              }
              tg.wait();
            });
          });
        }
#endif
    );
  }
}

void object_rows(Suite& s, bool quick) {
  const double T = s.trial();

  s.row(
      bench::Row("single client put calls (Plasma Store)", "ops/s")
          .with_peer("std::make_shared")
          .with_note("put(0), ref dropped at once"),
      [&] { return bench::ops_per_s(T, 1, [] { bench::keep(prism::put(0).entry()); }); },
      [&] {
        return bench::ops_per_s(T, 1, [] { bench::keep(std::make_shared<const int>(0).get()); });
      });

  s.row(
      bench::Row("multi client put calls (Plasma Store)", "ops/s")
          .with_peer("std::make_shared")
          .with_note("4 threads, 10k puts each"),
      [&] {
        return bench::ops_per_s(T, kClients * kBatch, [&] {
          on_threads(kClients, [](int) {
            for (int i = 0; i < kBatch; ++i) bench::keep(prism::put(i).entry());
          });
        });
      },
      [&] {
        return bench::ops_per_s(T, kClients * kBatch, [&] {
          on_threads(kClients, [](int) {
            for (int i = 0; i < kBatch; ++i) bench::keep(std::make_shared<const int>(i).get());
          });
        });
      });

  auto small = prism::put(0);
  auto shared_small = std::make_shared<const int>(0);
  s.row(
      bench::Row("single client get calls (Plasma Store)", "ops/s")
          .with_peer("shared_ptr copy + read")
          .with_note("get of one small put object"),
      [&] { return bench::ops_per_s(T, 1, [&] { bench::keep(prism::get(small)); }); },
      [&] {
        return bench::ops_per_s(T, 1, [&] {
          std::shared_ptr<const int> p = shared_small;
          bench::keep(*p);
        });
      });

  if (s.wants("single client put gigabytes") || s.wants("single client put gigabytes (moved in)")) {
    // Put gigabytes. The peer is a plain memcpy of the same size into memory that is already
    // faulted in; Prism's copying put (put of a const vector&) must allocate its own copy.
    const size_t bytes = quick ? kPutBytes / 8 : kPutBytes;
    const double gb = static_cast<double>(bytes) / 1e9;
    std::vector<char> src(bytes, 1);
    std::vector<char> dst(bytes, 0);
    // Without a pooled buffer of its size, a copying put writes into fresh memory: shown beside
    // the row (a size 1% larger than any buffer the row's runs leave in the pool).
    double fresh_gbps = 0;
    if (s.wants("single client put gigabytes")) {
      std::vector<char> other(bytes + bytes / 100, 1);
      const double t0 = bench::now_s();
      auto r = prism::put(other);
      fresh_gbps = static_cast<double>(other.size()) / 1e9 / (bench::now_s() - t0);
      bench::keep(r.entry());
    }
    s.row(
        bench::Row("single client put gigabytes", "GB/s")
            .with_peer("memcpy")
            .goal(0.8)
            .with_extra("first put of a new size (no pooled buffer) [GB/s]", fresh_gbps)
            .with_note("put of a const 800 MB vector (a copy; its buffer is pooled after the ref "
                       "drops) vs memcpy into pre-faulted memory"),
        [&] {
          const double t0 = bench::now_s();
          auto r = prism::put(src);
          const double t = bench::now_s() - t0;
          bench::keep(r.entry());
          return gb / t;
        },
        [&] {
          const double t0 = bench::now_s();
          std::memcpy(dst.data(), src.data(), bytes);
          bench::keep(dst.data());
          const double t = bench::now_s() - t0;
          return gb / t;
        });
    s.row(
        bench::Row("single client put gigabytes (moved in)", "GB/s")
            .with_peer("memcpy")
            .goal(10)
            .with_note("put(std::move(buffer)) of 800 MB: zero-copy when >> memcpy"),
        [&] {
          double total = 0;
          for (int i = 0; i < 20; ++i) {
            RawBuffer buf(bytes);  // untouched: no page faults inside the timed region
            const double t0 = bench::now_s();
            auto r = prism::put(std::move(buf));
            total += bench::now_s() - t0;
            bench::keep(r.entry());
          }
          return 20 * gb / total;
        },
        [&] {
          const double t0 = bench::now_s();
          std::memcpy(dst.data(), src.data(), bytes);
          bench::keep(dst.data());
          return gb / (bench::now_s() - t0);
        });
  }

  auto f = prism::task(small_value);
  s.row(bench::Row("single client wait 1k refs", "ops/s")
            .with_note("one op = 1,000 tasks, then wait(not_ready, 1) until all are ready"),
        [&] {
          return bench::ops_per_s(T, 1, [&] {
            std::vector<prism::ObjectRef<int>> not_ready(1000);
            for (auto& r : not_ready) r = f.remote();
            while (!not_ready.empty()) not_ready = prism::wait(not_ready, 1).second;
          });
        });

  {
    auto obj = prism::task([] {
                 std::vector<prism::ObjectRef<int>> v;
                 v.reserve(10'000);
                 for (int i = 0; i < 10'000; ++i) v.push_back(prism::put(1));
                 return v;
               }).remote();
    prism::get(obj);
    std::vector<std::shared_ptr<const int>> peer_obj;
    for (int i = 0; i < 10'000; ++i) peer_obj.push_back(std::make_shared<const int>(1));
    s.row(
        bench::Row("single client get object containing 10k refs", "ops/s")
            .with_peer("vector<shared_ptr> copy")
            .with_note("get (a copy) of a vector of 10k refs"),
        [&] { return bench::ops_per_s(T, 1, [&] { bench::keep(prism::get(obj).size()); }); },
        [&] {
          return bench::ops_per_s(T, 1, [&] {
            auto copy = peer_obj;
            bench::keep(copy.size());
          });
        });
  }
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv);
  const int cpus = static_cast<int>(std::thread::hardware_concurrency());
  prism::init({.num_cpus = static_cast<double>(cpus)});
  bench::Report report("microbench", flags);
  report.fact("prism_num_cpus", std::to_string(cpus));
  // PRISM_DASHBOARD=127.0.0.1:0 measures the rows with a dashboard on (it records every run's
  // span for its live timeline).
  report.fact("dashboard", prism::dashboard_url().empty() ? "off" : "on");
#ifdef PRISM_HAVE_TBB
  report.fact("peer", "oneTBB (interface " + std::to_string(TBB_INTERFACE_VERSION) +
                          "), default arena (" + std::to_string(tbb::info::default_concurrency()) +
                          " threads)");
#else
  report.fact("peer", "oneTBB not found at build time: task rows have no peer");
#endif
  report.print_header();
  Suite suite(flags, report);
  task_rows(suite);
  actor_rows(suite);
  object_rows(suite, flags.quick);
  report.finish();
  prism::shutdown();
  return 0;
}
