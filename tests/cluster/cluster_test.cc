// Cluster mode end to end: a driver (this test process) and node processes (this executable
// started with PRISM_ADDRESS) on loopback. Every wait has a deadline; every child is reaped.
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <prism/prism.h>

#if defined(PRISM_TEST_DASHBOARD)
#include <httplib.h>
#endif

#include "cluster_fixture.h"
#include "cluster_main.h"
#include "cluster_link.h"
#include "ucx_comm.h"
#include "wire.h"

namespace {

using namespace std::chrono_literals;
using prism_test::Child;
using prism_test::ClusterTest;

// ---- registered functions (every node has them: the same executable) ----

// Works for `ms` milliseconds (stands for compute), then says where it ran.
std::string where_after(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return prism::node_id();
}
int add(int a, int b) { return a + b; }
std::vector<double> scale(const std::vector<double>& v, double k) {
  std::vector<double> out(v);
  for (double& x : out) x *= k;
  return out;
}
std::string greet(const std::string& who) { return "hello " + who + " from " + prism::node_id(); }
int fails(int x) {
  if (x > 0) throw std::runtime_error("bad input " + std::to_string(x));
  return x;
}
// Nested tasks on the node that runs it.
std::pair<int, std::string> nested_sum(int n) {
  std::vector<prism::ObjectRef<int>> parts;
  for (int i = 0; i < n; ++i) parts.push_back(prism::task(add).remote(i, 1));
  int sum = 0;
  for (auto& p : parts) sum += prism::get(p, 30s);
  return {sum, prism::node_id()};
}
void nothing(int) {}
std::tuple<int, int> divmod(int a, int b) { return {a / b, a % b}; }
// Prints `marker` on stdout and stderr where it runs.
std::string say(const std::string& marker) {
  std::printf("%s on stdout\n", marker.c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "%s on stderr\n", marker.c_str());
  return prism::node_id();
}
// Submits `n` children of `ms` each where it runs (holding its CPU while it does), then says
// where it ran and where each child ran: "<parent> <child> <child> ...".
std::string fan_out(int n, int ms) {
  std::vector<prism::ObjectRef<std::string>> children;
  for (int i = 0; i < n; ++i) children.push_back(prism::task(where_after).remote(ms));
  std::string out = prism::node_id();
  for (auto& c : children) out += " " + prism::get(c, 60s);
  return out;
}
PRISM_REMOTE(where_after, add, scale, greet, fails, nested_sum, nothing, divmod, say, fan_out);

// Where it ran, and whether that node declared a gadget.
// An actor that can live on any node.
class Account {
 public:
  explicit Account(int start) : balance_(start) {
    if (start < 0) throw std::invalid_argument("negative opening balance");
  }
  int deposit(int amount) {
    balance_ += amount;
    history_.push_back(amount);
    return balance_;
  }
  std::vector<int> history() const { return history_; }
  std::string where() const { return prism::node_id(); }
  int fail(int code) { throw std::runtime_error("account error " + std::to_string(code)); }
  int slow_balance(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));  // stands for work
    return balance_;
  }

 private:
  int balance_;
  std::vector<int> history_;
};
PRISM_ACTOR(Account, &Account::deposit, &Account::history, &Account::where, &Account::fail,
            &Account::slow_balance);

// Uses an actor handle it is given, wherever it runs.
int deposit_twice(prism::ActorHandle<Account> a, int amount) {
  prism::get(a.task(&Account::deposit).remote(amount), 30s);
  return prism::get(a.task(&Account::deposit).remote(amount), 30s);
}
// Says where it ran, after depositing through the handle.
std::string deposit_from(const prism::ActorHandle<Account>& a, int amount) {
  prism::get(a.task(&Account::deposit).remote(amount), 30s);
  return prism::node_id();
}
void close_account(const prism::ActorHandle<Account>& a) { prism::kill(a); }
// Finds a named actor from wherever it runs.
int deposit_to_named(const std::string& name, int amount) {
  auto a = prism::get_actor<Account>(name);
  return prism::get(a.task(&Account::deposit).remote(amount), 30s);
}
std::string lookup_error(const std::string& name) {
  try {
    prism::get_actor<Account>(name);
    return "found";
  } catch (const prism::Error& e) {
    return e.what();
  }
}

std::string node_of_gadget_task() {
  return prism::node_id() + (prism::cluster_resources().count("gadget") ? " with gadget" : "");
}
PRISM_REMOTE(node_of_gadget_task, deposit_twice, deposit_from, close_account, deposit_to_named,
             lookup_error);

// Run on a node: tasks only another node (or the driver) can run, submitted from there.
std::string ask_for_gadget() {
  auto three = prism::task(add).remote(1, 2);  // made here, an argument there
  auto sum = prism::task(add).resource("gadget", 1).remote(three, 10);
  auto where = prism::task(node_of_gadget_task).resource("gadget", 1).remote();
  return prism::node_id() + " asked, " + prism::get(where, 30s) + ", " +
         std::to_string(prism::get(sum, 30s));
}
std::string ask_for_two_cpus() {
  return prism::node_id() + " asked, " + prism::get(prism::task(where_after).num_cpus(2).remote(1), 30s);
}
std::string failure_elsewhere() {
  try {
    prism::get(prism::task(fails).resource("gadget", 1).remote(5), 30s);
    return "no error";
  } catch (const prism::TaskError& e) {
    return e.node_id() + " " + e.function_name() + ": " + e.message();
  }
}
std::string nobody_fits() {
  try {
    prism::get(prism::task(node_of_gadget_task).resource("gadget", 5).remote(), 30s);
    return "it ran";
  } catch (const prism::InfeasibleError& e) {
    return e.what();
  }
}
PRISM_REMOTE(ask_for_gadget, ask_for_two_cpus, failure_elsewhere, nobody_fits);

// Run on a node: actors that node cannot hold (a gadget, 2 CPUs), created from there.
std::string account_elsewhere(int start) {
  auto account = prism::actor<Account>(start).resource("gadget", 1).remote();
  std::string out = prism::get(account.task(&Account::where).remote(), 30s);
  for (int i = 1; i <= 3; ++i) {
    out += " " + std::to_string(prism::get(account.task(&Account::deposit).remote(i), 30s));
  }
  try {
    prism::get(account.task(&Account::fail).remote(4), 30s);
  } catch (const prism::TaskError& e) {
    out += " " + e.node_id() + ": " + e.message();
  }
  return out;  // its last handle goes: the actor stops there, and its gadget is free again
}
std::string account_on_two_cpus() {
  auto account = prism::actor<Account>(1).num_cpus(2).remote();
  return prism::get(account.task(&Account::where).remote(), 30s);
}
std::string bad_account_elsewhere() {
  auto account = prism::actor<Account>(-1).resource("gadget", 1).remote();
  try {
    prism::get(account.task(&Account::deposit).remote(1), 30s);
    return "no error";
  } catch (const prism::ActorDiedError& e) {
    return e.what();
  }
}
std::string killed_elsewhere() {
  auto account = prism::actor<Account>(0).resource("gadget", 1).remote();
  prism::get(account.task(&Account::deposit).remote(1), 30s);
  prism::kill(account);
  try {
    prism::get(account.task(&Account::deposit).remote(1), 30s);
    return "still alive";
  } catch (const prism::ActorDiedError&) {
    return "died";
  }
}
// An actor whose constructor's argument cannot travel.
class Callback {
 public:
  explicit Callback(std::function<int()> f) : f_(std::move(f)) {}
  int call() { return f_(); }

 private:
  std::function<int()> f_;
};
PRISM_ACTOR(Callback, &Callback::call);
std::string unsendable_elsewhere() {
  auto c = prism::actor<Callback>(std::function<int()>([] { return 1; })).resource("gadget", 1).remote();
  try {
    prism::get(c.task(&Callback::call).remote(), 30s);
    return "it ran";
  } catch (const prism::ActorDiedError& e) {
    return e.what();
  }
}
PRISM_REMOTE(account_elsewhere, account_on_two_cpus, bad_account_elsewhere, killed_elsewhere,
             unsendable_elsewhere);

// CI once lost a node's join: the driver's hello reached the node's progress thread before the
// node's main thread had recorded that connection as its driver's, and was dropped; the node
// then waited for a welcome until the driver gave up. Here the node pauses 300 ms right after it
// connects (PRISM_TESTING_JOIN_PAUSE_MS, as preemption on a loaded machine would): it joins.
TEST_F(ClusterTest, ANodeSlowToRecordItsDriverStillJoins) {
  start(0, {{{"PRISM_TESTING_JOIN_PAUSE_MS", "300"}}});
  EXPECT_EQ(prism::node_count(), 2);
  EXPECT_EQ(prism::get(prism::task(where_after).remote(0), 60s), "node1");
}

// The driver makes a joining node ready, then welcomes it; a task another thread places on the
// node in between must not reach it before the welcome (a node drops what comes first). Here the
// driver pauses 300 ms between the two (PRISM_TESTING_WELCOME_PAUSE_MS) while this thread
// submits tasks only the new node can run: every one of them runs there.
TEST_F(ClusterTest, TasksPlacedOnANodeAsItJoinsRunThere) {
  setenv("PRISM_TESTING_WELCOME_PAUSE_MS", "300", 1);  // (read by the driver at each join)
  struct Unset {
    ~Unset() { unsetenv("PRISM_TESTING_WELCOME_PAUSE_MS"); }
  } unset_at_the_end;
  start(1, {});
  add_node({{"PRISM_RESOURCES", "gadget:1"}});
  std::vector<prism::ObjectRef<std::string>> refs;
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    refs.push_back(prism::task(node_of_gadget_task).resource("gadget", 1).remote());
    try {
      prism::wait_for_nodes(1, 2ms);  // (paces the submissions until the node is in)
      break;
    } catch (const prism::TimeoutError&) {
      ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "the node never joined";
    }
  }
  refs.push_back(prism::task(node_of_gadget_task).resource("gadget", 1).remote());
  // One deadline for all (a dropped task would otherwise cost each its own 60 s).
  auto [ready, pending] = prism::wait(refs, static_cast<int>(refs.size()), 60s);
  ASSERT_TRUE(pending.empty()) << pending.size() << " of " << refs.size() << " never ran";
  for (auto& r : refs) EXPECT_EQ(prism::get(r, 1s), "node1 with gadget");
}

TEST_F(ClusterTest, TasksSpreadOverNodesWhenTheDriverIsBusy) {
  start(1, {{}, {}});
  EXPECT_EQ(prism::node_count(), 3);
  std::vector<prism::ObjectRef<std::string>> refs;
  for (int i = 0; i < 12; ++i) refs.push_back(prism::task(where_after).remote(100));
  std::set<std::string> nodes;
  for (auto& r : refs) nodes.insert(prism::get(r, 60s));
  EXPECT_GE(nodes.size(), 2u) << "every task ran on one node";
  for (const auto& n : nodes) EXPECT_TRUE(n == "node0" || n == "node1" || n == "node2") << n;
}

// A busy node's nested tasks spill: one it cannot fit now goes to the driver, which sends it to
// a node with room; when no node has room it comes back and queues where it was submitted.
TEST_F(ClusterTest, ABusyNodesNestedTasksSpillToANodeWithRoom) {
  // The driver has no CPU; each node has one, the first a "first" resource for the parent.
  start(0, {{{"PRISM_RESOURCES", "first:1"}}, {}});
  const std::string got =
      prism::get(prism::task(fan_out).resource("first", 1).remote(3, 1000), 60s);
  std::vector<std::string> where;
  for (size_t at = 0; at < got.size();) {
    const size_t end = std::min(got.find(' ', at), got.size());
    where.push_back(got.substr(at, end - at));
    at = end + 1;
  }
  ASSERT_EQ(where.size(), 4u) << got;
  const std::string parent = where[0];
  int here = 0, elsewhere = 0;
  for (size_t i = 1; i < where.size(); ++i) {
    EXPECT_TRUE(where[i] == "node1" || where[i] == "node2") << got;
    (where[i] == parent ? here : elsewhere) += 1;
  }
  // The parent holds its node's CPU while it submits: the first child goes to the other node,
  // which then has no room either (for 1 s: far longer than the parent takes to submit the
  // others); the others come back and run after the parent blocks.
  EXPECT_GE(elsewhere, 1) << got;
  EXPECT_GE(here, 1) << got;
  const prism::cluster::LinkCounters c = prism::cluster::link_counters();
  EXPECT_EQ(c.nested_placed, static_cast<uint64_t>(elsewhere));
  // The second child asked too (no refusal had come yet) and was sent back; later ones asked
  // unless that refusal came first (then the node keeps them for a while without asking).
  EXPECT_GE(c.nested_sent_back, 1u);
  EXPECT_LE(c.nested_placed + c.nested_sent_back, 3u);
}

TEST_F(ClusterTest, PrismNestedSpillZeroKeepsANodesTasksThere) {
  start(0, {{{"PRISM_RESOURCES", "first:1"}, {"PRISM_NESTED_SPILL", "0"}},
            {{"PRISM_NESTED_SPILL", "0"}}});
  const std::string got =
      prism::get(prism::task(fan_out).resource("first", 1).remote(3, 20), 60s);
  const std::string parent = got.substr(0, got.find(' '));
  EXPECT_EQ(got, parent + " " + parent + " " + parent + " " + parent);
  EXPECT_EQ(prism::cluster::link_counters().nested_placed, 0u);
}

TEST_F(ClusterTest, CustomResourceOfOneNodeSendsTasksThere) {
  setenv("PRISM_INFEASIBLE_TIMEOUT", "1", 1);
  start(1, {{{"PRISM_RESOURCES", "gadget:1"}}, {}});
  unsetenv("PRISM_INFEASIBLE_TIMEOUT");
  // The driver has no gadget: accepted because node1 has one.
  auto r = prism::task(node_of_gadget_task).resource("gadget", 1).remote();
  const std::string where = prism::get(r, 60s);
  EXPECT_TRUE(where == "node1 with gadget" || where == "node2 with gadget") << where;
  // A lambda cannot go to another node: refused with a clear error.
  auto l = prism::task([] { return 1; }).resource("gadget", 1).remote();
  try {
    prism::get(l, 60s);
    FAIL() << "a lambda needing a node's resource ran";
  } catch (const prism::InfeasibleError& e) {
    EXPECT_NE(std::string(e.what()).find("PRISM_REMOTE"), std::string::npos) << e.what();
  }
  // Nobody has two gadgets: the task waits for a node that has (this driver listens: nodes may
  // still join), then fails naming the nodes' shapes once PRISM_INFEASIBLE_TIMEOUT (1 s here)
  // has passed.
  auto two = prism::task(node_of_gadget_task).resource("gadget", 2).remote();
  try {
    prism::get(two, 30s);
    FAIL() << "a task nobody fits ran";
  } catch (const prism::InfeasibleError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("PRISM_INFEASIBLE_TIMEOUT"), std::string::npos) << what;
    EXPECT_NE(what.find(": 1 CPU, 1 gadget"), std::string::npos) << what;
  }
}

TEST_F(ClusterTest, ATaskNoNodeFitsWaitsForOneToJoin) {
  start(1, {});
  auto r = prism::task(node_of_gadget_task).resource("gadget", 1).remote();
  auto [ready, pending] = prism::wait(std::vector{r}, 1, 200ms);
  EXPECT_TRUE(ready.empty()) << "it ran without a gadget";
  EXPECT_EQ(prism::stats().tasks.on_other_nodes, 1u) << "a task waiting for a node is counted there";
  add_node({{"PRISM_RESOURCES", "gadget:1"}});
  EXPECT_EQ(prism::get(r, 60s), "node1 with gadget");
  // Dispatched twice (waiting, then sent), counted once.
  const prism::TaskCounts t = prism::stats().tasks;
  EXPECT_EQ(t.submitted, 1u);
  EXPECT_EQ(t.done, 1u);
  EXPECT_EQ(t.waiting_for_arguments, 0u);
  EXPECT_EQ(t.waiting_for_resources, 0u);
  EXPECT_EQ(t.on_other_nodes, 0u);
}

// A node's task that it cannot run goes through the driver: run there, or relayed to a node
// that can; its result, its error (naming where it threw) or its infeasibility comes back.
TEST_F(ClusterTest, ANodesTaskOnlyAnotherNodeCanRunGoesThere) {
  start(2, {{{"PRISM_RESOURCES", "remote:4"}}, {{"PRISM_RESOURCES", "gadget:1"}}});
  // Which node is which (they are numbered in the order they joined).
  const std::string asker = prism::get(prism::task(where_after).resource("remote", 1).remote(1), 60s);
  const std::string gadget =
      prism::get(prism::task(node_of_gadget_task).resource("gadget", 1).remote(), 60s);
  ASSERT_NE(asker, "node0");
  ASSERT_EQ(gadget.find(" with gadget"), 5u) << gadget;
  const std::string gadget_node = gadget.substr(0, 5);
  auto on_node = [](auto f) { return prism::task(f).resource("remote", 1).remote(); };
  EXPECT_EQ(prism::get(on_node(ask_for_gadget), 60s), asker + " asked, " + gadget + ", 13");
  EXPECT_EQ(prism::get(on_node(ask_for_two_cpus), 60s), asker + " asked, node0")
      << "only the driver has 2 CPUs";
  EXPECT_EQ(prism::get(on_node(failure_elsewhere), 60s), gadget_node + " fails: bad input 5");
  const std::string why = prism::get(on_node(nobody_fits), 60s);
  EXPECT_NE(why.find("no node of the cluster can run it"), std::string::npos) << why;
  EXPECT_NE(why.find("1 gadget"), std::string::npos) << why;
  // Nothing stays counted: the gadget is free for the driver's own task.
  EXPECT_EQ(prism::get(prism::task(node_of_gadget_task).resource("gadget", 1).remote(), 60s),
            gadget);
}

// An actor a node cannot hold is created through the driver: on the driver, or on a node that
// can hold it; the node calls it (in order), hears its errors (naming where it threw), kills
// it, and releases it when its last handle there goes.
TEST_F(ClusterTest, ANodesActorOnlyAnotherNodeCanHoldIsBuiltThere) {
  start(2, {{{"PRISM_RESOURCES", "remote:4"}}, {{"PRISM_RESOURCES", "gadget:1"}}});
  const std::string gadget =
      prism::get(prism::task(node_of_gadget_task).resource("gadget", 1).remote(), 60s);
  const std::string gadget_node = gadget.substr(0, gadget.find(' '));
  auto on_node = [](auto f, auto... args) {
    return prism::task(f).resource("remote", 1).remote(args...);
  };
  const std::string expected = gadget_node + " 11 13 16 " + gadget_node + ": account error 4";
  EXPECT_EQ(prism::get(on_node(account_elsewhere, 10), 60s), expected);
  // The first one was released there (one gadget): a second one can be built.
  EXPECT_EQ(prism::get(on_node(account_elsewhere, 10), 60s), expected);
  EXPECT_EQ(prism::get(on_node(account_on_two_cpus), 60s), "node0") << "only the driver has 2 CPUs";
  const std::string bad = prism::get(on_node(bad_account_elsewhere), 60s);
  EXPECT_NE(bad.find("negative opening balance"), std::string::npos) << bad;
  EXPECT_EQ(prism::get(on_node(killed_elsewhere), 60s), "died");
  const std::string unsendable = prism::get(on_node(unsendable_elsewhere), 60s);
  EXPECT_NE(unsendable.find("cannot travel"), std::string::npos) << unsendable;
  // Nothing holds the gadget any more, in the driver's view too (the killed one's is given back).
  for (const prism::NodeStats& n : prism::stats().nodes) {
    if (n.node == gadget_node) {
      EXPECT_EQ(n.available.at("gadget"), 1.0) << n.node;
    }
  }
  // The driver's own actor gets it.
  auto mine = prism::actor<Account>(5).resource("gadget", 1).remote();
  EXPECT_EQ(prism::get(mine.task(&Account::deposit).remote(1), 60s), 6);
  EXPECT_EQ(prism::get(mine.task(&Account::where).remote(), 60s), gadget_node);
}

TEST_F(ClusterTest, ArgumentsResultsAndChainsCrossNodes) {
  start(1, {{{"PRISM_RESOURCES", "remote:100"}}});
  auto a = prism::task(add).resource("remote", 1).remote(1, 2);
  auto b = prism::task(add).resource("remote", 1).remote(a, 10);  // a ref argument
  auto c = prism::task(add).remote(b, 100);                        // local or remote
  EXPECT_EQ(prism::get(c, 60s), 113);
  std::vector<double> v(1000);
  std::iota(v.begin(), v.end(), 0.0);
  auto s = prism::task(scale).resource("remote", 1).remote(v, 2.0);
  const std::vector<double> out = prism::get(s, 60s);
  ASSERT_EQ(out.size(), v.size());
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(out[i], 2.0 * v[i]);
  auto g = prism::task(greet).resource("remote", 1).remote(std::string("prism"));
  EXPECT_EQ(prism::get(g, 60s), "hello prism from node1");
  auto [q, rem] = prism::task(divmod).num_returns<2>().resource("remote", 1).remote(17, 5);
  EXPECT_EQ(prism::get(q, 60s), 3);
  EXPECT_EQ(prism::get(rem, 60s), 2);
  auto n = prism::task(nothing).resource("remote", 1).remote(3);
  EXPECT_NO_THROW(prism::get(n, 60s));
  // Large value (above the inline threshold) both ways.
  std::vector<double> big(1 << 20, 1.5);
  auto bs = prism::task(scale).resource("remote", 1).remote(big, 2.0);
  const std::vector<double> big_out = prism::get(bs, 60s);
  ASSERT_EQ(big_out.size(), big.size());
  EXPECT_EQ(big_out.front(), 3.0);
  EXPECT_EQ(big_out.back(), 3.0);
}

TEST_F(ClusterTest, ErrorsNameTheNodeWhereTheTaskFailed) {
  start(1, {{{"PRISM_RESOURCES", "remote:1"}}});
  auto r = prism::task(fails).resource("remote", 1).remote(7);
  try {
    prism::get(r, 60s);
    FAIL() << "no error";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.node_id(), "node1");
    EXPECT_EQ(e.function_name(), "fails");
    EXPECT_NE(e.type_name().find("runtime_error"), std::string::npos) << e.type_name();
    EXPECT_EQ(e.message(), "bad input 7");
  }
  // A dependent of the failed task fails with the same error, without running.
  auto d = prism::task(add).resource("remote", 1).remote(r, 1);
  EXPECT_THROW(prism::get(d, 60s), prism::TaskError);
}

TEST_F(ClusterTest, NestedTasksRunOnTheNodeThatSubmitsThem) {
  start(1, {{{"PRISM_RESOURCES", "remote:1"}, {"PRISM_NUM_CPUS", "2"}}});
  auto r = prism::task(nested_sum).resource("remote", 1).remote(20);
  const auto [sum, node] = prism::get(r, 60s);
  EXPECT_EQ(sum, 20 * 19 / 2 + 20);
  EXPECT_EQ(node, "node1");
}

TEST_F(ClusterTest, WaitTimeoutsAndCancelWorkOnRemoteTasks) {
  start(1, {{{"PRISM_RESOURCES", "remote:4"}, {"PRISM_NUM_CPUS", "4"}}});
  auto slow = prism::task(where_after).resource("remote", 1).remote(1500);
  auto fast = prism::task(where_after).resource("remote", 1).remote(10);
  auto [ready, pending] = prism::wait(std::vector<prism::ObjectRef<std::string>>{slow, fast}, 1, 30s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].id(), fast.id());
  EXPECT_EQ(prism::get(fast, 30s), "node1");
  EXPECT_THROW(prism::get(slow, 50ms), prism::TimeoutError);
  // Cancelling a task running on another node fails its ref at once; its late result is
  // dropped.
  EXPECT_TRUE(prism::cancel(slow));
  EXPECT_THROW(prism::get(slow, 5s), prism::TaskCancelledError);
  // A dependent of the cancelled task fails without running.
  auto after = prism::task(greet).resource("remote", 1).remote(slow);
  EXPECT_THROW(prism::get(after, 30s), prism::TaskCancelledError);
  // The node goes on serving.
  EXPECT_EQ(prism::get(prism::task(add).resource("remote", 1).remote(1, 1), 30s), 2);
}

TEST_F(ClusterTest, ActorsArePlacedByTheirResourcesAndCalledInOrder) {
  start(1, {{{"PRISM_RESOURCES", "vault:1"}}, {}});
  // Only a node has a vault: the actor lives there.
  auto account = prism::actor<Account>(100).resource("vault", 1).remote();
  const std::string where = prism::get(account.task(&Account::where).remote(), 60s);
  EXPECT_NE(where, "node0");
  // Calls from one caller run in order (each returns the running balance).
  std::vector<prism::ObjectRef<int>> balances;
  for (int i = 1; i <= 50; ++i) balances.push_back(account.task(&Account::deposit).remote(i));
  int expected = 100;
  for (int i = 1; i <= 50; ++i) {
    expected += i;
    EXPECT_EQ(prism::get(balances[static_cast<size_t>(i - 1)], 60s), expected);
  }
  std::vector<int> history = prism::get(account.task(&Account::history).remote(), 60s);
  ASSERT_EQ(history.size(), 50u);
  for (int i = 1; i <= 50; ++i) EXPECT_EQ(history[static_cast<size_t>(i - 1)], i);
  // The stats count the placed actor's creation and its calls as done there.
  {
    const prism::TaskCounts t = prism::stats().tasks;
    EXPECT_EQ(t.submitted, 53u) << "creation, where, 50 deposits, history";
    EXPECT_EQ(t.done, 53u);
    EXPECT_EQ(t.waiting_for_resources, 0u);
    EXPECT_EQ(t.on_other_nodes, 0u);
  }
  // A ref argument (resolved here, sent there).
  auto amount = prism::task(add).remote(2, 3);
  EXPECT_EQ(prism::get(account.task(&Account::deposit).remote(amount), 60s), expected + 5);
  // A method that throws: TaskError naming the node; the actor lives on.
  try {
    prism::get(account.task(&Account::fail).remote(7), 60s);
    FAIL() << "no error";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.node_id(), where);
    EXPECT_EQ(e.message(), "account error 7");
  }
  EXPECT_EQ(prism::get(account.task(&Account::deposit).remote(0), 60s), expected + 5);
  // Killed: its calls fail with ActorDiedError, and the vault it held is free for another.
  prism::kill(account);
  EXPECT_THROW(prism::get(account.task(&Account::deposit).remote(1), 60s), prism::ActorDiedError);
  auto second = prism::actor<Account>(1).resource("vault", 1).remote();
  EXPECT_EQ(prism::get(second.task(&Account::deposit).remote(1), 60s), 2);
}

TEST_F(ClusterTest, RemoteActorErrorsAndLostNodes) {
  start(1, {{{"PRISM_RESOURCES", "vault:2"}}});
  expect_clean_exit_ = false;
  // A constructor that throws there: calls fail with ActorDiedError naming the cause.
  auto bad = prism::actor<Account>(-1).resource("vault", 1).remote();
  try {
    prism::get(bad.task(&Account::deposit).remote(1), 60s);
    FAIL() << "a call on an actor whose constructor threw succeeded";
  } catch (const prism::ActorDiedError& e) {
    EXPECT_NE(std::string(e.what()).find("negative opening balance"), std::string::npos)
        << e.what();
  }
  // A named actor on the node is found by name on the driver.
  auto named = prism::actor<Account>(5).resource("vault", 1).name("savings").remote();
  auto found = prism::get_actor<Account>("savings");
  EXPECT_EQ(prism::get(found.task(&Account::deposit).remote(5), 60s), 10);
  // A call in flight when the node dies fails with a clear error; later calls with
  // ActorDiedError.
  auto slow = named.task(&Account::slow_balance).remote(30000);
  children_.front().kill_now();  // whether it was sent yet or not, the call fails clearly
  try {
    prism::get(slow, 20s);
    FAIL() << "the call survived its node";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << e.what();
  }
  EXPECT_THROW(prism::get(named.task(&Account::deposit).remote(1), 20s), prism::ActorDiedError);
}

TEST_F(ClusterTest, ActorHandlesTravelToTasksOnOtherNodes) {
  start(1, {{{"PRISM_RESOURCES", "remote:8,vault:2"}, {"PRISM_NUM_CPUS", "2"}},
            {{"PRISM_RESOURCES", "remote:8"}, {"PRISM_NUM_CPUS", "2"}}});
  // An actor on the driver (no request), called from tasks on the nodes.
  auto here = prism::actor<Account>(0).remote();
  EXPECT_EQ(prism::get(here.task(&Account::where).remote(), 60s), "node0");
  EXPECT_EQ(prism::get(prism::task(deposit_twice).resource("remote", 1).remote(here, 4), 60s), 8);
  // An actor on a node (the vault), called from tasks on both nodes: relayed by the driver. (As
  // tasks end and start, a node's proxy of it loses its last handle while the next task's
  // handle arrives: a new proxy then, never the one going.)
  auto there = prism::actor<Account>(100).resource("vault", 1).remote();
  std::vector<prism::ObjectRef<std::string>> ran;
  for (int i = 0; i < 40; ++i) {
    ran.push_back(prism::task(deposit_from).resource("remote", 1).remote(there, 1));
  }
  std::set<std::string> nodes;
  for (auto& r : ran) nodes.insert(prism::get(r, 60s));
  for (const auto& n : nodes) EXPECT_NE(n, "node0");
  EXPECT_EQ(prism::get(there.task(&Account::deposit).remote(0), 60s), 140);
  // Named actors are found from nodes: one on the driver, one on a node.
  auto named_here = prism::actor<Account>(1000).name("here").remote();
  EXPECT_EQ(prism::get(prism::task(deposit_to_named).resource("remote", 1).remote(
                           std::string("here"), 1), 60s), 1001);
  auto named_there = prism::actor<Account>(2000).resource("vault", 1).name("there").remote();
  (void)named_there;
  EXPECT_EQ(prism::get(prism::task(deposit_to_named).resource("remote", 1).remote(
                           std::string("there"), 2), 60s), 2002);
  const std::string missing = prism::get(
      prism::task(lookup_error).resource("remote", 1).remote(std::string("nobody")), 60s);
  EXPECT_NE(missing.find("no live actor named 'nobody'"), std::string::npos) << missing;
  // kill from a task on a node reaches the actor.
  prism::get(prism::task(close_account).resource("remote", 1).remote(there), 60s);
  EXPECT_THROW(prism::get(there.task(&Account::deposit).remote(1), 60s), prism::ActorDiedError);
}

TEST_F(ClusterTest, ADriverWithoutCpusSendsEveryTaskToTheNodes) {
  start(0, {{}, {}});
  std::vector<prism::ObjectRef<std::string>> refs;
  for (int i = 0; i < 8; ++i) refs.push_back(prism::task(where_after).remote(1));
  for (auto& r : refs) EXPECT_NE(prism::get(r, 60s), "node0");
  // What cannot travel cannot run anywhere: a clear error, not a hang.
  auto l = prism::task([] { return 1; }).remote();
  EXPECT_THROW(prism::get(l, 30s), prism::InfeasibleError);
}

TEST_F(ClusterTest, ManyThreadsSubmitting) {
  start(1, {{}, {}});
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &wrong] {
      std::vector<prism::ObjectRef<int>> refs;
      for (int i = 0; i < 500; ++i) refs.push_back(prism::task(add).remote(t, i));
      for (int i = 0; i < 500; ++i) {
        if (prism::get(refs[static_cast<size_t>(i)], 60s) != t + i) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

// A task that may not run again (max_retries(0)); with retries it runs elsewhere (faults_test.cc).
TEST_F(ClusterTest, KillingANodeFailsItsWorkWithAClearError) {
  start(1, {{{"PRISM_RESOURCES", "remote:1"}}});
  expect_clean_exit_ = false;
  auto r = prism::task(where_after).resource("remote", 1).max_retries(0).remote(30000);
  // The call is in flight from the moment it was submitted (the driver sent it): kill the node.
  children_.front().kill_now();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    prism::get(r, 20s);
    FAIL() << "the task survived its node";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << e.what();
    EXPECT_NE(std::string(e.what()).find("node1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("max_retries"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);
  EXPECT_EQ(prism::node_count(), 1);
  // The driver keeps working.
  EXPECT_EQ(prism::get(prism::task(add).remote(2, 3), 30s), 5);
}

TEST_F(ClusterTest, AWrongTokenIsRefusedAndCounted) {
  start(1, {});
  const std::string bad = job_dir_ + "/bad_token";
  {
    FILE* f = std::fopen(bad.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n", f);
    std::fclose(f);
    chmod(bad.c_str(), 0600);
  }
  Child& c = add_node({{"PRISM_TOKEN_FILE", bad}});
  ASSERT_TRUE(c.wait_exit(30s));
  EXPECT_NE(c.exit_status(), 0);
  EXPECT_EQ(prism::node_count(), 1);
  EXPECT_GE(prism::cluster::link_counters().refused_joins, 1u);
  // A node with the right token still joins.
  add_node({});
  prism::wait_for_nodes(1, 60s);
}

TEST_F(ClusterTest, ADifferentBinaryIsRefusedAtJoin) {
  start(1, {});
  const std::string other = prism_test::self_exe() + "_other_node";
  Child& c = add_node({}, other);
  ASSERT_TRUE(c.wait_exit(30s));
  EXPECT_NE(c.exit_status(), 0);
  EXPECT_EQ(prism::node_count(), 1);
  EXPECT_GE(prism::cluster::link_counters().refused_joins, 1u);
}

TEST_F(ClusterTest, MalformedAndUnauthenticatedMessagesAreDropped) {
  start(1, {{}});
  const auto before = prism::cluster::link_counters();
  {
    std::atomic<int> errors{0};
    prism::cluster::UcxComm::Callbacks cb;
    cb.on_message = [](prism::cluster::PeerId, std::string_view) {};
    cb.on_accept = [](prism::cluster::PeerId) {};
    cb.on_peer_error = [&](prism::cluster::PeerId, const std::string&) { ++errors; };
    prism::cluster::UcxComm intruder(cb);
    const auto peer = intruder.connect(address_);
    // Waits (bounded) until the driver counted what was sent. One message at a time: messages
    // queued together travel as one batch, and nothing after garbage in a batch can be read.
    auto wait_for = [&](uint64_t malformed, uint64_t unauthenticated) {
      const auto deadline = std::chrono::steady_clock::now() + 20s;
      for (;;) {
        const auto now = prism::cluster::link_counters();
        if (now.malformed >= before.malformed + malformed &&
            now.unauthenticated >= before.unauthenticated + unauthenticated) {
          return true;
        }
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(10ms);  // (counters of another thread; no event to wait on)
      }
    };
    intruder.send(peer, std::string("garbage that is no frame at all"));
    ASSERT_TRUE(wait_for(1, 0)) << "garbage was not counted";
    std::string frame;
    prism::cluster::CallMsg call;
    call.call_id = 1;
    call.function = "add";
    prism::cluster::encode(call, &frame);
    intruder.send(peer, frame);  // a call before authenticating
    ASSERT_TRUE(wait_for(1, 1)) << "an unauthenticated call was not counted";
    intruder.send(peer, frame.substr(0, frame.size() - 3));  // truncated
    ASSERT_TRUE(wait_for(2, 1)) << "a truncated frame was not counted";
    std::string bad_version = frame;
    bad_version[4] = 99;
    intruder.send(peer, bad_version);
    ASSERT_TRUE(wait_for(3, 1)) << "a frame of another version was not counted";
    EXPECT_EQ(errors.load(), 0);
  }
  // The job goes on.
  EXPECT_EQ(prism::node_count(), 2);
  EXPECT_EQ(prism::get(prism::task(add).remote(40, 2), 30s), 42);
}

// At most 32 connections wait to prove the token at once; each new one closes the oldest, so a
// flood of connections that never authenticate cannot keep a real node out.
TEST_F(ClusterTest, AFloodOfUnprovenConnectionsCannotKeepANodeOut) {
  start(0, {});
  const auto before = prism::cluster::link_counters();
  // The intruder hears each connection the driver closes ("closed by peer").
  std::mutex mu;
  std::condition_variable cv;
  int closed = 0;
  prism::cluster::UcxComm::Callbacks cb;
  cb.on_message = [](prism::cluster::PeerId, std::string_view) {};
  cb.on_accept = [](prism::cluster::PeerId) {};
  cb.on_peer_error = [&](prism::cluster::PeerId, const std::string&) {
    {
      std::lock_guard<std::mutex> lock(mu);
      ++closed;
    }
    cv.notify_all();
  };
  prism::cluster::UcxComm intruder(cb);
  constexpr int kFlood = 48;
  for (int i = 0; i < kFlood; ++i) intruder.connect(address_);
  // The driver accepted them all, and closed the 16 oldest (counted before each close).
  {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, 30s, [&] { return closed >= 16; })) << closed << " closed";
  }
  EXPECT_EQ(prism::cluster::link_counters().evicted_handshakes, before.evicted_handshakes + 16);
  // 32 unproven connections are still open: a node joins all the same, and works.
  add_node({});
  prism::wait_for_nodes(1, 60s);
  EXPECT_EQ(prism::node_count(), 2);
  EXPECT_EQ(prism::get(prism::task(where_after).remote(1), 30s), "node1")
      << "the driver has no CPU: the node runs it";
}

// Runs `command` (bounded by its own --timeout) and returns its standard output.
std::string run_output(const std::string& command, int* status) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

TEST_F(ClusterTest, PrismStatusShowsNodesResourcesAndTasks) {
  start(1, {{{"PRISM_RESOURCES", "gadget:2"}}, {}});
  // One task held on the gadget node while the CLI looks.
  auto busy = prism::task(where_after).resource("gadget", 1).remote(1500);
  int status = -1;
  const std::string out = run_output(std::string(PRISM_CLI_PATH) + " status --job-dir " +
                                         job_dir_ + " --timeout 20",
                                     &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("nodes: 3"), std::string::npos) << out;
  EXPECT_NE(out.find("node0 (driver"), std::string::npos) << out;
  EXPECT_NE(out.find("node1"), std::string::npos) << out;
  EXPECT_NE(out.find("node2"), std::string::npos) << out;
  EXPECT_NE(out.find("2 gadget"), std::string::npos) << out;
  EXPECT_NE(out.find("tasks running or queued there: 1"), std::string::npos) << out;
  // And what each node says of itself (its report, or that none came yet).
  size_t own = 0;
  for (size_t at = out.find("its own counts"); at != std::string::npos;
       at = out.find("its own counts", at + 1)) {
    ++own;
  }
  EXPECT_EQ(own, 2u) << out;
  // The job's counts (prism::stats()): the held task is on another node.
  EXPECT_NE(out.find("1 on other nodes"), std::string::npos) << out;
  EXPECT_NE(out.find("objects on the driver:"), std::string::npos) << out;
  // A client is no node.
  EXPECT_EQ(prism::node_count(), 3);
  EXPECT_TRUE(prism::get(busy, 60s).rfind("node", 0) == 0);
  // Without the token: refused, clear error, non-zero status.
  const std::string bad = job_dir_ + "/other_token";
  {
    FILE* f = std::fopen(bad.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210\n", f);
    std::fclose(f);
    chmod(bad.c_str(), 0600);
  }
  const std::string refused =
      run_output(std::string(PRISM_CLI_PATH) + " status --address " + address_ +
                     " --token-file " + bad + " --timeout 20 2>&1",
                 &status);
  EXPECT_NE(status, 0) << refused;
  EXPECT_NE(refused.find("token"), std::string::npos) << refused;
}

#if defined(PRISM_TEST_DASHBOARD)
// The driver's dashboard shows the whole job: every node with its resources. PRISM_DASHBOARD
// reaches the nodes too (they inherit the environment) and they serve none.
TEST_F(ClusterTest, TheDriversDashboardShowsEveryNode) {
  struct Env {
    Env() { setenv("PRISM_DASHBOARD", "127.0.0.1:0", 1); }
    ~Env() { unsetenv("PRISM_DASHBOARD"); }
  } env;
  start(1, {{{"PRISM_RESOURCES", "gadget:2"}}, {}});
  const std::string url = prism::dashboard_url();
  const size_t colon = url.rfind(':');
  const size_t slash = url.find('/', colon);
  const size_t token_at = url.find("?token=");
  ASSERT_TRUE(colon != std::string::npos && slash != std::string::npos &&
              token_at != std::string::npos)
      << url;
  EXPECT_EQ(prism::get(prism::task(where_after).resource("gadget", 1).remote(0), 60s).rfind("node", 0),
            0u);
  httplib::Client client("127.0.0.1", std::stoi(url.substr(colon + 1, slash - colon - 1)));
  client.set_read_timeout(30);
  auto r = client.Get("/api/summary", {{"Authorization", "Bearer " + url.substr(token_at + 7)}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("\"role\":\"driver\""), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("{\"node\":\"node0\""), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("{\"node\":\"node1\""), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("{\"node\":\"node2\""), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("\"gadget\":2"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("\"done\":1"), std::string::npos) << r->body;
}
#endif

// What a task prints on a node reaches the driver's stdout and stderr, each line prefixed with
// the node (as Ray shows its workers' output).
TEST_F(ClusterTest, WhatTasksPrintOnNodesReachesTheDriverPrefixed) {
  start(1, {{{"PRISM_RESOURCES", "gadget:1"}}});
  // This process's stdout and stderr into one pipe for the length of the test, read with a
  // deadline; put back whatever happens.
  struct Redirect {
    int saved[2] = {dup(1), dup(2)};
    int pipe_fd[2] = {-1, -1};
    Redirect() {
      std::fflush(nullptr);
      if (pipe(pipe_fd) != 0) return;
      dup2(pipe_fd[1], 1);
      dup2(pipe_fd[1], 2);
      close(pipe_fd[1]);
    }
    ~Redirect() {
      std::fflush(nullptr);
      dup2(saved[0], 1);
      dup2(saved[1], 2);
      close(saved[0]);
      close(saved[1]);
      if (pipe_fd[0] >= 0) close(pipe_fd[0]);
    }
  };
  const std::string marker = "marker-" + std::to_string(getpid());
  std::string seen;
  std::string where;
  bool both = false;
  {
    Redirect r;
    ASSERT_GE(r.pipe_fd[0], 0);
    where = prism::get(prism::task(say).resource("gadget", 1).remote(marker), 60s);
    const std::string out = "(" + where + ") " + marker + " on stdout\n";
    const std::string err = "(" + where + ") " + marker + " on stderr\n";
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!both) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{r.pipe_fd[0], POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(r.pipe_fd[0], buf, sizeof buf);
      if (n <= 0) break;
      seen.append(buf, static_cast<size_t>(n));
      both = seen.find(out) != std::string::npos && seen.find(err) != std::string::npos;
    }
  }
  EXPECT_EQ(where.rfind("node", 0), 0u);
  EXPECT_TRUE(both) << "the driver printed: " << seen;
  // Nothing the node printed reached the driver without its prefix.
  EXPECT_EQ(seen.find("\n" + marker), std::string::npos) << seen;
  EXPECT_NE(seen.rfind(marker, 0), 0u) << seen;
}

// prism::timeline on the driver holds every node's runs too: one process row per node, on the
// driver's clock. The node's clock is made an hour off (as another machine's would be): its runs
// must still land inside this test's span of the driver's clock.
TEST_F(ClusterTest, TheTimelineHasEveryNodesRuns) {
  RecordTimelines recording;
  const auto began = std::chrono::steady_clock::now();
  start(1, {{{"PRISM_RESOURCES", "gadget:1"}, {"PRISM_TEST_CLOCK_SKEW_NS", "3600000000000"}}});
  std::vector<prism::ObjectRef<std::string>> there;
  for (int i = 0; i < 3; ++i) there.push_back(prism::task(where_after).resource("gadget", 1).remote(20));
  std::string node;
  for (auto& r : there) node = prism::get(r, 60s);
  ASSERT_EQ(node.rfind("node", 0), 0u);
  // A value large enough to stay on the node, then pulled here: a transfer.
  const std::vector<double> big(200000, 1.5);
  auto scaled = prism::task(scale).resource("gadget", 1).remote(big, 2.0);
  ASSERT_EQ(prism::get(scaled, 60s).at(199999), 3.0);
  const double elapsed_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - began).count();
  const std::string json = timeline_json();
  EXPECT_NE(json.find("\"args\":{\"name\":\"prism node node0\"}"), std::string::npos) << json;
  EXPECT_NE(json.find("\"pid\":2,\"args\":{\"name\":\"prism node " + node + "\"}"),
            std::string::npos)
      << json;
  // The node's three runs, in its row, each within this test's span of the driver's clock.
  size_t runs = 0;
  for (size_t at = json.find("{\"name\":\"where_after\""); at != std::string::npos;
       at = json.find("{\"name\":\"where_after\"", at + 1)) {
    const std::string event = json.substr(at, json.find('}', at) - at);
    EXPECT_NE(event.find("\"pid\":2,"), std::string::npos) << event;
    const size_t ts_at = event.find("\"ts\":");
    const size_t dur_at = event.find("\"dur\":");
    ASSERT_NE(ts_at, std::string::npos);
    const double ts = std::stod(event.substr(ts_at + 5));
    const double dur = std::stod(event.substr(dur_at + 6));
    EXPECT_GE(ts, 0) << event;
    EXPECT_GE(dur, 15000) << event;  // it slept 20 ms
    EXPECT_LE(ts + dur, elapsed_us + 1000) << event;
    ++runs;
  }
  EXPECT_EQ(runs, 3u) << json;
  // The result's pull from the node to the driver: a slice in each row, joined by a flow.
  EXPECT_NE(json.find(node + " -> node0\",\"cat\":\"transfer\",\"ph\":\"X\",\"pid\":2,"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find(node + " -> node0\",\"cat\":\"transfer\",\"ph\":\"X\",\"pid\":1,"),
            std::string::npos);
  EXPECT_NE(json.find("\"ph\":\"s\",\"id\":1,\"pid\":2,\"tid\":0"), std::string::npos);
  EXPECT_NE(json.find("\"ph\":\"f\",\"bp\":\"e\",\"id\":1,\"pid\":1,\"tid\":0"),
            std::string::npos);
}

// A node listens for other nodes' direct pulls (its address is in `prism status`). A process
// that does not know the job's token is refused there, and gets nothing it asks for; the node
// and the job go on.
TEST_F(ClusterTest, ANodesDirectListenerRefusesWhoeverLacksTheToken) {
  start(1, {{{"PRISM_RESOURCES", "a:1"}}});
  // A value kept on the node: what an intruder would want.
  auto kept = prism::task(scale).resource("a", 1).remote(std::vector<double>(200000, 1.5), 2.0);
  ASSERT_EQ(prism::wait(std::vector{kept}, 1, 60s).first.size(), 1u);
  int status = -1;
  const std::string out = run_output(std::string(PRISM_CLI_PATH) + " status --job-dir " +
                                         job_dir_ + " --timeout 20",
                                     &status);
  ASSERT_EQ(status, 0) << out;
  const size_t at = out.find("direct pulls: at ");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string address = out.substr(at + 17, out.find('\n', at) - at - 17);

  std::mutex mu;
  std::condition_variable cv;
  std::vector<prism::cluster::Message> got;
  bool closed = false;
  prism::cluster::UcxComm::Callbacks cb;
  cb.on_message = [&](prism::cluster::PeerId, std::string_view data) {
    std::lock_guard<std::mutex> lock(mu);
    prism::cluster::split_frames(data, [&](std::string_view frame) {
      if (auto m = prism::cluster::decode(frame, nullptr)) got.push_back(std::move(*m));
    });
    cv.notify_all();
  };
  cb.on_accept = [](prism::cluster::PeerId) {};
  cb.on_peer_error = [&](prism::cluster::PeerId, const std::string&) {
    std::lock_guard<std::mutex> lock(mu);
    closed = true;
    cv.notify_all();
  };
  prism::cluster::UcxComm intruder(cb);
  const auto peer = intruder.connect(address);
  auto wait_until = [&](auto done) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, 20s, done);
  };
  // The node speaks first: its challenge.
  ASSERT_TRUE(wait_until([&] { return !got.empty(); })) << "no hello from " << address;
  ASSERT_TRUE(std::holds_alternative<prism::cluster::HelloMsg>(got[0]));
  // Pulls before proving anything are not answered; then a proof made without the token.
  std::string frames;
  for (uint64_t object = 1; object <= 4; ++object) {
    prism::cluster::encode(prism::cluster::ObjectPullMsg{object}, &frames);
  }
  prism::cluster::AuthMsg auth;
  auth.role = prism::cluster::PeerRole::kPeer;
  auth.hostname = "intruder";
  prism::cluster::encode(auth, &frames);
  intruder.send(peer, frames);
  ASSERT_TRUE(wait_until([&] { return closed; })) << "the node did not close the connection";
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(got.size(), 2u) << "the node answered more than the handshake";
    ASSERT_TRUE(std::holds_alternative<prism::cluster::RefusedMsg>(got[1]));
    EXPECT_NE(std::get<prism::cluster::RefusedMsg>(got[1]).reason.find("authentication failed"),
              std::string::npos);
  }
  // The job goes on, and the value is still there.
  EXPECT_EQ(prism::get(kept, 30s).size(), 200000u);
  EXPECT_EQ(prism::node_count(), 2);
}

}  // namespace

int main(int argc, char** argv) { return prism_test::cluster_test_main(argc, argv); }
