// launcher.h — starting a job under Slurm or Open MPI through their PMIx server.
//
// Under `mpirun -np N ./app` or `srun ./app` every process sees PMIX_RANK. Rank 0 becomes the
// driver: it listens on PRISM_LISTEN (127.0.0.1:0 by default), publishes its address and the
// job's token with PMIx_Put + PMIx_Commit, and joins the fence; every other rank joins the fence
// (PMIX_COLLECT_DATA), reads rank 0's values with PMIx_Get and joins as a node. The driver's
// init returns once all N-1 nodes joined. No MPI library is linked.
//
// Ranks that share a machine split its hardware threads evenly (at least one CPU each) unless
// PRISM_NUM_CPUS or InitOptions.num_cpus says otherwise, and its visible CUDA devices (see
// prism::internal::shared_devices) unless PRISM_NUM_GPUS or InitOptions.num_gpus does.
//
// Thread-safe: a session is used by the thread that starts the runtime, then only destroyed.
#pragma once

#include <memory>
#include <string>

namespace prism::cluster {

class LauncherSession {
 public:
  virtual ~LauncherSession() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_size() const = 0;
  // This process's rank among those on its machine: 0 .. local_size() - 1.
  virtual int local_rank() const = 0;
  // Publishes key=value for every rank (visible after fence()).
  virtual void publish(const std::string& key, const std::string& value) = 0;
  // Every rank of the job calls it once; returns when all did.
  virtual void fence() = 0;
  // The value `rank` published.
  virtual std::string lookup(int rank, const std::string& key) = 0;
};

// True if this process was started by a PMIx launcher (PMIX_RANK is set).
bool started_by_launcher();
// Connects to the launcher's PMIx server. Throws prism::Error(kUnavailable) if it cannot, or if
// this build has no PMIx support.
std::unique_ptr<LauncherSession> start_launcher_session();

}  // namespace prism::cluster
