// prism — the command line of a Prism cluster job.
//
//   prism status                        the latest job on this machine ($TMPDIR/prism/latest)
//   prism status --job-dir DIR          the job whose files are in DIR
//   prism status --address H:P --token-file F
//   prism status --watch [SECONDS]      refresh every SECONDS (default 2) until interrupted
//
// Connects as a client (not a node), proves the job's token and prints the driver's view: the
// nodes, their shapes and the resources in use, the tasks in flight per node, the job's task
// counts by state, objects and transfers (prism::stats()) and its latest failures
// (prism::errors()).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "job_dir.h"
#include "prism/errors.h"
#include "status_client.h"

namespace {

int usage(const char* why) {
  if (why != nullptr) std::fprintf(stderr, "prism: %s\n", why);
  std::fprintf(stderr,
               "usage: prism status [--job-dir DIR | --address HOST:PORT --token-file FILE] "
               "[--watch [SECONDS]] [--timeout SECONDS]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "status") != 0) {
    return usage(argc < 2 ? "no command" : "unknown command (the only one is 'status')");
  }
  std::string job_dir, address, token_file;
  double watch = 0, timeout = 10;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        usage((std::string(name) + " needs a value").c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--job-dir") {
      job_dir = value("--job-dir");
    } else if (a == "--address") {
      address = value("--address");
    } else if (a == "--token-file") {
      token_file = value("--token-file");
    } else if (a == "--timeout") {
      timeout = std::atof(value("--timeout").c_str());
    } else if (a == "--watch") {
      watch = 2;
      if (i + 1 < argc && argv[i + 1][0] != '-') watch = std::atof(argv[++i]);
      if (!(watch > 0)) return usage("--watch needs a positive number of seconds");
    } else {
      return usage(("unknown option " + a).c_str());
    }
  }
  try {
    if (address.empty()) {
      if (job_dir.empty()) job_dir = prism::cluster::jobs_root() + "/latest";
      address = prism::cluster::read_line_file(job_dir + "/address");
      if (token_file.empty()) token_file = job_dir + "/token";
    }
    if (token_file.empty()) return usage("--address needs --token-file");
    const std::string token = prism::cluster::read_token_file(token_file);
    for (;;) {
      const std::string text = prism::cluster::query_status(address, token, timeout);
      if (watch > 0) std::printf("\033[H\033[2J");  // clear the terminal between refreshes
      std::printf("Prism job at %s\n%s", address.c_str(), text.c_str());
      std::fflush(stdout);
      if (watch <= 0) return 0;
      std::this_thread::sleep_for(std::chrono::duration<double>(watch));  // the refresh period
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "prism status: %s\n", e.what());
    return 1;
  }
}
