// A job started by a launcher: `mpirun -np 3 prism_cluster_mpi_job`. Rank 0 is the driver (its
// init returns once the other ranks joined through PMIx); ranks 1 and 2 serve and exit with 0
// when the driver's job ends. The driver checks the results, that work ran on >= 2 nodes, and
// that the 3 ranks sharing this machine took 3 different shares of its GPUs.
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <prism/internal/device_support.h>
#include <prism/prism.h>

namespace {

// Where it ran, and that process's share of the machine's GPUs: "node1 1/3".
std::string where_after(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));  // stands for work
  const prism::internal::DeviceShare s = prism::internal::take_device_share();
  return prism::node_id() + " " + std::to_string(s.part) + "/" + std::to_string(s.parts);
}
long square(long x) { return x * x; }
PRISM_REMOTE(where_after, square);

int fail(const std::string& why) {
  std::fprintf(stderr, "mpi_job: FAILED: %s\n", why.c_str());
  return 1;
}

}  // namespace

int main() {
  prism::init();  // under mpirun: the driver returns here; nodes never do
  using namespace std::chrono_literals;
  if (prism::node_count() != 3) return fail("node_count() = " + std::to_string(prism::node_count()));
  std::vector<prism::ObjectRef<std::string>> refs;
  for (int i = 0; i < 12; ++i) refs.push_back(prism::task(where_after).remote(100));
  std::set<std::string> nodes;
  std::map<std::string, std::string> share_of;  // node -> its GPU share
  std::set<std::string> shares;
  for (auto& r : refs) {
    const std::string seen = prism::get(r, 60s);
    const std::string node = seen.substr(0, seen.find(' '));
    const std::string share = seen.substr(seen.find(' ') + 1);
    if (share.size() != 3 || share.substr(1) != "/3") return fail("share of " + seen);
    if (!share_of.emplace(node, share).second && share_of[node] != share) return fail(seen);
    nodes.insert(node);
    shares.insert(share);
  }
  if (nodes.size() < 2) return fail("every task ran on " + *nodes.begin());
  if (shares.size() != nodes.size()) return fail("two ranks on this machine took one GPU share");
  long sum = 0;
  std::vector<prism::ObjectRef<long>> squares;
  for (long i = 1; i <= 100; ++i) squares.push_back(prism::task(square).remote(i));
  for (auto& s : squares) sum += prism::get(s, 60s);
  if (sum != 338350) return fail("sum of squares " + std::to_string(sum));
  std::printf("mpi_job: ok: 3 nodes, tasks ran on %zu of them, sum of squares %ld\n", nodes.size(), sum);
  prism::shutdown();
  return 0;
}
