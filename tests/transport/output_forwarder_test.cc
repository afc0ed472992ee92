// OutputForwarder (a node's stdout/stderr to the driver) and ClockOffset (a node's clock, for
// the cluster timeline), driven directly. The forwarder redirects this test process's own
// descriptors 1 and 2 for the length of a test.

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "clock_offset.h"
#include "output_forwarder.h"

namespace {

using prism::cluster::ClockOffset;
using prism::cluster::OutputForwarder;

TEST(OutputForwarder, TakesWholeLinesAndFlushesLongOnes) {
  std::string b = "one\ntwo\nthr";
  EXPECT_EQ(OutputForwarder::take_lines(&b, 4096), "one\ntwo\n");
  EXPECT_EQ(b, "thr");
  EXPECT_EQ(OutputForwarder::take_lines(&b, 4096), "");
  EXPECT_EQ(b, "thr");
  b += "ee\n";
  EXPECT_EQ(OutputForwarder::take_lines(&b, 4096), "three\n");
  EXPECT_TRUE(b.empty());
  // A line as long as the limit goes out without its end (which then starts a line of its own).
  b = std::string(10, 'x');
  EXPECT_EQ(OutputForwarder::take_lines(&b, 10), std::string(10, 'x') + "\n");
  EXPECT_TRUE(b.empty());
}

struct Caught {
  std::mutex mu;
  std::vector<std::pair<int, std::string>> texts;
  std::string of(int stream) {
    std::lock_guard<std::mutex> lock(mu);
    std::string all;
    for (auto& [s, t] : texts) {
      if (s == stream) all += t;
    }
    return all;
  }
};

ino_t inode_of(int fd) {
  struct stat st {};
  fstat(fd, &st);
  return st.st_ino;
}

TEST(OutputForwarder, CatchesEverythingWrittenToOneAndTwoUntilStopped) {
  const ino_t out_before = inode_of(1), err_before = inode_of(2);
  Caught caught;
  {
    OutputForwarder f;
    ASSERT_TRUE(f.start([&caught](int stream, const std::string& text) {
      std::lock_guard<std::mutex> lock(caught.mu);
      caught.texts.emplace_back(stream, text);
      return true;
    }));
    std::printf("printf line\n");
    std::cout << "cout line" << std::endl;
    std::fprintf(stderr, "stderr line\nno newline at the end");
    const char raw[] = "raw write\n";
    ASSERT_EQ(write(1, raw, sizeof raw - 1), static_cast<ssize_t>(sizeof raw - 1));
    f.stop();  // drains: everything above is delivered before it returns
  }
  EXPECT_EQ(caught.of(1), "printf line\ncout line\nraw write\n");
  EXPECT_EQ(caught.of(2), "stderr line\nno newline at the end\n");
  // The original descriptors are back.
  EXPECT_EQ(inode_of(1), out_before);
  EXPECT_EQ(inode_of(2), err_before);
}

TEST(OutputForwarder, StopsAlthoughSomethingElseStillHoldsThePipe) {
  // A library's dup(1), or a child process that inherited fd 1, keeps the pipe's write end
  // open: the reader never sees end of file, and stop() must still return.
  Caught caught;
  int held = -1;
  {
    OutputForwarder f;
    ASSERT_TRUE(f.start([&caught](int stream, const std::string& text) {
      std::lock_guard<std::mutex> lock(caught.mu);
      caught.texts.emplace_back(stream, text);
      return true;
    }));
    held = dup(1);
    std::printf("before stop\n");
    f.stop();
  }
  ASSERT_GE(held, 0);
  close(held);
  EXPECT_EQ(caught.of(1), "before stop\n");
}

TEST(OutputForwarder, WhatCannotBeSentGoesWhereItWouldHaveGone) {
  // Our stdout, for the length of the test, is a file we can read back.
  char path[] = "/tmp/prism-forwarder-XXXXXX";
  const int file = mkstemp(path);
  ASSERT_GE(file, 0);
  std::fflush(stdout);
  const int saved = dup(1);
  dup2(file, 1);
  {
    OutputForwarder f;
    ASSERT_TRUE(f.start([](int, const std::string&) { return false; }));  // no driver
    std::printf("kept here\n");
    f.stop();
  }
  std::fflush(stdout);
  dup2(saved, 1);
  close(saved);
  char buf[64] = {};
  ASSERT_GE(pread(file, buf, sizeof buf - 1, 0), 0);
  close(file);
  unlink(path);
  EXPECT_STREQ(buf, "kept here\n");
}

TEST(ClockOffset, KeepsTheSampleWithTheShortestRoundTrip) {
  ClockOffset c;
  EXPECT_EQ(c.offset_ns(), 0);
  // The peer's clock is 1,000,000 ns ahead. A slow round trip (asymmetric: 900 out, 100 back)...
  EXPECT_TRUE(c.add(0, 1000000 + 900, 1000));
  EXPECT_EQ(c.offset_ns(), 1000000 + 400);
  EXPECT_EQ(c.error_bound_ns(), 500);
  // ...is replaced by a faster one, and a slower one after it is ignored.
  EXPECT_TRUE(c.add(5000, 1005000 + 60, 5100));
  EXPECT_EQ(c.offset_ns(), 1000000 + 10);
  EXPECT_FALSE(c.add(9000, 1009000 + 1500, 12000));
  EXPECT_EQ(c.offset_ns(), 1000000 + 10);
  // A negative round trip (clock confusion) is never kept.
  EXPECT_FALSE(c.add(100, 0, 50));
  EXPECT_EQ(c.samples(), 4);
  // The true offset is within the error bound.
  EXPECT_LE(std::abs(c.offset_ns() - 1000000), c.error_bound_ns());
}

}  // namespace
