// spill_dir_test.cc — spill directories (object_store/spill_dir.h): fresh, private, and those a
// killed process left behind are removed by the next one, while a live process's stay.
#include "object_store/spill_dir.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "prism/errors.h"

namespace {

TEST(SpillDirTest, FreshPrivateDirectoriesAndOrphansOfDeadProcessesGo) {
  const char* tmp = std::getenv("TMPDIR");
  const std::string root = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") +
                           "/prism-spill-dir-test-" + std::to_string(getpid());
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root);
  // A process that is gone (a child, reaped) left a directory; a live one (this) has one too.
  const pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  const std::string orphan = root + "/prism-x-" + std::to_string(child) + "-abcdef";
  const std::string live = root + "/prism-x-" + std::to_string(getppid()) + "-abcdef";
  const std::string other = root + "/prism-y-" + std::to_string(child) + "-abcdef";
  for (const auto& d : {orphan, live, other}) std::filesystem::create_directories(d);

  const std::string a = prism::internal::make_spill_dir(root, "prism-x");
  const std::string b = prism::internal::make_spill_dir(root, "prism-x");
  EXPECT_NE(a, b) << "two spillers share a directory";
  EXPECT_TRUE(std::filesystem::is_directory(a));
  struct stat st{};
  ASSERT_EQ(stat(a.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "a spill directory others can read";
  EXPECT_FALSE(std::filesystem::exists(orphan)) << "a dead process's directory was left";
  EXPECT_TRUE(std::filesystem::exists(live)) << "a live process's directory was removed";
  EXPECT_TRUE(std::filesystem::exists(other)) << "another prefix's directory was removed";
  EXPECT_THROW(prism::internal::make_spill_dir("/proc/prism-no-such-root", "prism-x"),
               prism::Error);
  std::filesystem::remove_all(root);
}

}  // namespace
