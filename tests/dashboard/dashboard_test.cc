// The dashboard (Prism::dashboard): its data as JSON (report.h) and its history ring, driven
// directly; its HTTP server with the token required (cpp-httplib's client); a job with 10^6
// tasks in flight still answered; and, in the release configuration, the page loaded in
// Debian's headless Chromium, its DOM checked and a screenshot written as a test artifact.

#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/child.h"
#include "core/test_util.h"
#include "history.h"
#include "prism/prism.h"
#include "report.h"

namespace {

using prism_test::Gate;
using prism_test::kTimeout;
using Clock = std::chrono::steady_clock;

int pixel_check(int x) {
  if (x == 42) throw std::runtime_error("dashboard-test: bad pixel 42");
  return x;
}
int plus_one(int x) { return x + 1; }
int hold(Gate gate, int x) {
  if (!gate.wait()) throw std::runtime_error("hold: gate never opened");
  return x;
}
PRISM_REMOTE(pixel_check, plus_one, hold);

// --- the data, without HTTP -----------------------------------------------------------------

TEST(DashboardHistory, KeepsTheNewestSamplesInTimeOrder) {
  prism::dashboard::History h(3);
  EXPECT_TRUE(h.snapshot().empty());
  for (int i = 1; i <= 5; ++i) {
    prism::dashboard::Sample s;
    s.t_ms = i * 1000;
    s.tasks.done = static_cast<uint64_t>(i);
    h.add(s);
    const auto snap = h.snapshot();
    ASSERT_EQ(snap.size(), static_cast<size_t>(std::min(i, 3)));
    EXPECT_EQ(snap.back().tasks.done, static_cast<uint64_t>(i));
    for (size_t k = 1; k < snap.size(); ++k) EXPECT_LT(snap[k - 1].t_ms, snap[k].t_ms);
  }
  EXPECT_EQ(h.snapshot().front().tasks.done, 3u);
}

TEST(DashboardReport, SummaryHasCountsNodesAndTheNewestErrorsEscaped) {
  prism::dashboard::SummaryInput in;
  in.node = "node0";
  in.role = "driver";
  in.uptime_s = 12.5;
  in.stats.tasks.submitted = 1000000;
  in.stats.tasks.waiting_for_arguments = 999990;
  in.stats.tasks.running = 2;
  in.stats.nodes.push_back({"node0", {{"CPU", 2}}, {{"CPU", 0.5}}});
  in.stats.nodes.push_back({"node1", {{"CPU", 4}, {"GPU", 1}}, {{"CPU", 4}, {"GPU", 1}}});
  in.stats.nodes[0].reported = true;  // (node1 has not reported yet)
  in.stats.nodes[0].tasks_waiting_for_arguments = 5;
  in.stats.nodes[0].tasks_queued = 6;
  in.stats.nodes[0].tasks_running = 2;
  in.stats.nodes[0].tasks_done = 123;
  in.stats.nodes[0].primary_bytes = 4096;
  in.stats.nodes[0].threads = 3;
  for (size_t i = 0; i < prism::dashboard::kMaxErrorsShown + 10; ++i) {
    prism::TaskFailure f;
    f.function = "f";
    f.type = "std::runtime_error";
    f.message = "failure " + std::to_string(i) + " said \"no\"\n";
    in.errors.push_back(f);
  }
  prism::dashboard::Sample s;
  s.t_ms = 1000;
  s.tasks.running = 7;
  in.history = {s};
  in.history_interval_ms = 1000;
  const std::string j = prism::dashboard::summary_json(in);
  EXPECT_NE(j.find("\"submitted\":1000000"), std::string::npos) << j;
  EXPECT_NE(j.find("\"waiting_for_arguments\":999990"), std::string::npos);
  EXPECT_NE(j.find("{\"node\":\"node1\",\"total\":{\"CPU\":4,\"GPU\":1}"), std::string::npos);
  EXPECT_NE(j.find("\"available\":{\"CPU\":0.500}"), std::string::npos);
  // What each node counts itself, once it reported.
  EXPECT_NE(j.find("\"available\":{\"CPU\":0.500},\"reported\":true,"
                   "\"tasks_waiting_for_arguments\":5,\"tasks_queued\":6,\"tasks_running\":2,"
                   "\"tasks_done\":123,\"tasks_failed\":0,\"objects\":0,\"primary_bytes\":4096,"
                   "\"secondary_bytes\":0,\"threads\":3}"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("\"available\":{\"CPU\":4,\"GPU\":1},\"reported\":false}"), std::string::npos)
      << j;
  EXPECT_NE(j.find("\"uptime_s\":12.500"), std::string::npos);
  // Only the newest errors, escaped.
  EXPECT_NE(j.find("\"errors_total\":60"), std::string::npos);
  EXPECT_EQ(j.find("\"failure 9 said"), std::string::npos);
  EXPECT_NE(j.find("\"failure 10 said \\\"no\\\"\\n\""), std::string::npos);
  EXPECT_NE(j.find("\"failure 59 said"), std::string::npos);
  EXPECT_NE(j.find("\"samples\":[[1000,0,0,7,0,0,0]]"), std::string::npos) << j;
  // It stays one aggregate however many tasks are in flight.
  EXPECT_LT(j.size(), 16384u);
}

TEST(DashboardReport, TimelineNamesEachFunctionOnceAndMarksTruncation) {
  prism::dashboard::TimelineInput in;
  in.node = "node0";
  in.origin = Clock::now() - std::chrono::seconds(10);
  in.now = in.origin + std::chrono::seconds(10);
  in.window_ms = 60000;
  in.lanes.push_back({"node0", {}});
  in.lanes.push_back({"node2", {}});
  for (int i = 0; i < 3; ++i) {
    prism::internal::Timeline::Span s;
    s.name = i == 1 ? "b<\"x\">" : "a";
    s.task_sequence = static_cast<uint64_t>(i + 1);
    s.thread = i;
    s.start = in.origin + std::chrono::milliseconds(1000 * i);
    s.end = s.start + std::chrono::milliseconds(250);
    if (i == 2) s.gpus = {1};
    in.lanes[i == 2 ? 1 : 0].spans.push_back(s);
  }
  in.max_spans = 2;
  in.missing = {"node3"};
  const std::string j = prism::dashboard::timeline_json(in);
  EXPECT_NE(j.find("\"names\":[\"a\",\"b<\\\"x\\\">\"]"), std::string::npos) << j;
  EXPECT_NE(j.find("[0,0,0,250,0,1,-1],[0,1,1000,250,1,2,-1],[1,2,2000,250,0,3,1]"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("\"lanes\":[\"node0\",\"node2\"],\"missing\":[\"node3\"]"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("\"truncated\":true"), std::string::npos);  // node0's lane is full
  EXPECT_NE(j.find("\"now_ms\":10000"), std::string::npos);
  in.max_spans = 5;
  EXPECT_NE(prism::dashboard::timeline_json(in).find("\"truncated\":false"), std::string::npos);
}

TEST(DashboardReport, NumbersThatJsonCannotHoldAreNull) {
  prism::dashboard::SummaryInput in;
  in.uptime_s = std::nan("");
  in.stats.nodes.push_back({"n", {{"CPU", INFINITY}}, {{"CPU", 1e300}}});
  const std::string j = prism::dashboard::summary_json(in);
  EXPECT_NE(j.find("\"uptime_s\":null"), std::string::npos) << j;
  EXPECT_NE(j.find("\"total\":{\"CPU\":null}"), std::string::npos) << j;
  EXPECT_EQ(j.find("nan"), std::string::npos) << j;
  EXPECT_EQ(j.find("inf"), std::string::npos) << j;
}

// --- the server ----------------------------------------------------------------------------

struct Url {
  std::string host;
  int port = 0;
  std::string token;
};

Url parse_url(const std::string& url) {
  std::smatch m;
  const std::regex re(R"(^http://([0-9.]+):([0-9]+)/\?token=([0-9a-f]+)$)");
  if (!std::regex_match(url, m, re)) throw std::runtime_error("unexpected dashboard URL: " + url);
  return {m[1], std::stoi(m[2]), m[3]};
}

httplib::Client client(const Url& u) {
  httplib::Client c(u.host, u.port);
  c.set_connection_timeout(10);
  c.set_read_timeout(30);
  return c;
}

TEST(DashboardServer, RefusesEveryRequestWithoutTheTokenOrItsCookie) {
  prism::Runtime rt({.num_cpus = 2, .dashboard = "127.0.0.1:0"});
  const Url u = parse_url(rt.dashboard_url());
  auto c = client(u);
  for (const char* path : {"/", "/app.js", "/api/summary", "/api/timeline"}) {
    auto r = c.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 403) << path;
    EXPECT_EQ(r->body.find("\"tasks\""), std::string::npos) << path;
  }
  auto wrong = c.Get("/?token=" + std::string(u.token.size(), '0'));
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 403);
  auto forged =
      c.Get("/api/summary", {{"Cookie", "prism_session_" + std::to_string(u.port) + "=" + u.token}});
  ASSERT_TRUE(forged);
  EXPECT_EQ(forged->status, 403) << "the login token is not the session secret";

  // The login URL sets the session cookie and sends the browser to the page.
  auto login = c.Get("/?token=" + u.token);
  ASSERT_TRUE(login);
  EXPECT_EQ(login->status, 302);
  const std::string cookie = login->get_header_value("Set-Cookie");
  EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
  EXPECT_NE(cookie.find("SameSite=Lax"), std::string::npos);
  EXPECT_EQ(cookie.rfind("prism_session_" + std::to_string(u.port) + "=", 0), 0u) << cookie;
  const std::string session = cookie.substr(0, cookie.find(';'));
  auto page = c.Get("/", {{"Cookie", session}});
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<title>Prism dashboard</title>"), std::string::npos);
  auto js = c.Get("/app.js", {{"Cookie", "other=1; " + session}});
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 200);
  EXPECT_NE(js->get_header_value("Content-Type").find("javascript"), std::string::npos);
  // Scripts may send the token as a bearer instead.
  auto bearer = c.Get("/api/summary", {{"Authorization", "Bearer " + u.token}});
  ASSERT_TRUE(bearer);
  EXPECT_EQ(bearer->status, 200);
  EXPECT_NE(bearer->body.find("\"node\":\"" + rt.node_id() + "\""), std::string::npos);
  auto bad_window = c.Get("/api/timeline?window_ms=abc", {{"Cookie", session}});
  ASSERT_TRUE(bad_window);
  EXPECT_EQ(bad_window->status, 400);
}

TEST(DashboardServer, TwoDashboardsOnOneHostKeepTheirSessionsApart) {
  prism::Runtime a({.num_cpus = 1, .dashboard = "127.0.0.1:0"});
  prism::Runtime b({.num_cpus = 1, .dashboard = "127.0.0.1:0"});
  const Url ua = parse_url(a.dashboard_url()), ub = parse_url(b.dashboard_url());
  auto ca = client(ua), cb = client(ub);
  auto la = ca.Get("/?token=" + ua.token), lb = cb.Get("/?token=" + ub.token);
  ASSERT_TRUE(la && lb);
  const std::string sa = la->get_header_value("Set-Cookie");
  const std::string sb = lb->get_header_value("Set-Cookie");
  const std::string cookie_a = sa.substr(0, sa.find(';')), cookie_b = sb.substr(0, sb.find(';'));
  EXPECT_NE(cookie_a.substr(0, cookie_a.find('=')), cookie_b.substr(0, cookie_b.find('=')));
  // A browser sends both cookies to both (cookies ignore ports): each server takes its own.
  const std::string both = cookie_a + "; " + cookie_b;
  auto ra = ca.Get("/api/summary", {{"Cookie", both}});
  auto rb = cb.Get("/api/summary", {{"Cookie", both}});
  ASSERT_TRUE(ra && rb);
  EXPECT_EQ(ra->status, 200);
  EXPECT_EQ(rb->status, 200);
  auto wrong = cb.Get("/api/summary", {{"Cookie", cookie_a}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 403);
}

TEST(DashboardServer, ShowsTasksErrorsAndTheTimelineOfARunningJob) {
  prism::Runtime rt({.num_cpus = 2, .dashboard = "127.0.0.1:0"});
  const Url u = parse_url(rt.dashboard_url());
  auto c = client(u);
  const httplib::Headers auth{{"Authorization", "Bearer " + u.token}};
  std::vector<prism::ObjectRef<int>> done;
  for (int i = 0; i < 20; ++i) done.push_back(rt.task(plus_one).remote(i));
  for (auto& r : done) prism::get(r, kTimeout);
  auto bad = rt.task(pixel_check).remote(42);
  EXPECT_THROW(prism::get(bad, kTimeout), prism::TaskError);
  // (A task's result is published before its worker counts it done.)
  ASSERT_TRUE(prism_test::eventually([&] {
    const prism::Stats st = rt.stats();
    return st.tasks.done == 20 && st.tasks.failed == 1;
  }));

  auto s = c.Get("/api/summary", auth);
  ASSERT_TRUE(s);
  ASSERT_EQ(s->status, 200);
  EXPECT_NE(s->body.find("\"done\":20"), std::string::npos) << s->body;
  EXPECT_NE(s->body.find("\"failed\":1"), std::string::npos);
  EXPECT_NE(s->body.find("dashboard-test: bad pixel 42"), std::string::npos);
  EXPECT_NE(s->body.find("\"function\":\"pixel_check\""), std::string::npos);
  EXPECT_NE(s->body.find("\"role\":\"embedded\""), std::string::npos);
  // The history starts with the sample taken at start.
  EXPECT_NE(s->body.find("\"samples\":[["), std::string::npos);

  auto t = c.Get("/api/timeline?window_ms=60000", auth);
  ASSERT_TRUE(t);
  ASSERT_EQ(t->status, 200);
  EXPECT_NE(t->body.find("\"plus_one\""), std::string::npos) << t->body.substr(0, 300);
  EXPECT_NE(t->body.find("\"pixel_check\""), std::string::npos);
}

TEST(DashboardServer, AnswersWithAMillionTasksInFlight) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  const int n = 100000;  // the sanitizers' memory and time per task: a tenth
#else
  const int n = 1000000;
#endif
  prism::Runtime rt({.num_cpus = 2, .dashboard = "127.0.0.1:0"});
  const Url u = parse_url(rt.dashboard_url());
  auto c = client(u);
  Gate gate;
  auto first = rt.task(hold).remote(gate, 0);
  std::vector<prism::ObjectRef<int>> waiting;
  waiting.reserve(n);
  for (int i = 0; i < n; ++i) waiting.push_back(rt.task(plus_one).remote(first));
  auto r = c.Get("/api/summary", {{"Authorization", "Bearer " + u.token}});
  ASSERT_TRUE(r) << "no answer with " << n << " tasks waiting";
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("\"waiting_for_arguments\":" + std::to_string(n)), std::string::npos)
      << r->body.substr(0, 400);
  EXPECT_LT(r->body.size(), 16384u) << "the summary is aggregated, not per task";
  gate.open();
  EXPECT_EQ(prism::get(waiting.back(), kTimeout), 1);
  for (auto& w : waiting) ASSERT_EQ(prism::get(w, kTimeout), 1);
}

TEST(DashboardServer, BadAddressesAreClearErrors) {
  try {
    prism::Runtime rt({.num_cpus = 1, .dashboard = "127.0.0.1:http"});
    FAIL() << "a malformed address was accepted";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("host:port"), std::string::npos) << e.what();
  }
  prism::Runtime first({.num_cpus = 1, .dashboard = "127.0.0.1:0"});
  const Url u = parse_url(first.dashboard_url());
  try {
    prism::Runtime second({.num_cpus = 1, .dashboard = "127.0.0.1:" + std::to_string(u.port)});
    FAIL() << "two dashboards listened on one port";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("cannot listen"), std::string::npos) << e.what();
  }
  // Without one, the URL is empty.
  prism::Runtime none({.num_cpus = 1});
  EXPECT_EQ(none.dashboard_url(), "");
}

// --- in a real browser (release configuration) ----------------------------------------------

using prism_test::count_of;
using prism_test::read_file;

#if defined(PRISM_CHROMIUM)
// Runs headless Chromium on `url` with `args`; its stdout (and stderr) in `output`. False if it
// did not finish within the deadline (it is killed and reaped either way).
bool run_chromium(const std::string& url, std::vector<std::string> args, const std::string& output,
                  const std::string& profile) {
  std::vector<std::string> all = {"--headless", "--no-sandbox", "--disable-gpu",
                                  "--disable-dev-shm-usage", "--no-first-run",
                                  "--user-data-dir=" + profile,
                                  // The page polls; let it load and draw for 6 virtual seconds.
                                  "--virtual-time-budget=6000"};
  all.insert(all.end(), args.begin(), args.end());
  all.push_back(url);
  prism_test::Child chromium(PRISM_CHROMIUM, {}, all, output);
  if (!chromium.started()) return false;
  const bool exited = chromium.wait_exit(std::chrono::milliseconds(90000));
  return exited && chromium.exit_status() == 0;
}
#endif

TEST(DashboardBrowser, ChromiumShowsNodesCountsAndAnErrorAndIsRefusedWithoutTheToken) {
#if !defined(PRISM_CHROMIUM)
  GTEST_SKIP() << "the browser test runs in the release configuration with Debian's chromium "
                  "(scripts/setup.sh installs it)";
#else
  prism::Runtime rt({.num_cpus = 4, .dashboard = "127.0.0.1:0"});
  const std::string url = rt.dashboard_url();
  const Url u = parse_url(url);
  const std::string dir = std::string(PRISM_ARTIFACT_DIR);
  std::filesystem::create_directories(dir);
  const std::string profile = dir + "/chromium-profile-" + std::to_string(getpid());

  // A job in a known state: 30 done, 2 failed, 2 running (held), 5 waiting for their result.
  std::vector<prism::ObjectRef<int>> done;
  for (int i = 0; i < 30; ++i) done.push_back(rt.task(plus_one).remote(i));
  for (auto& r : done) prism::get(r, kTimeout);
  auto bad = rt.task(pixel_check).remote(42);
  EXPECT_THROW(prism::get(bad, kTimeout), prism::TaskError);
  // A name and a message full of markup are shown as text, never run.
  auto hostile = rt.task(pixel_check)
                     .name("<img src=x onerror=\"document.title='pwned'\">")
                     .remote(42);
  EXPECT_THROW(prism::get(hostile, kTimeout), prism::TaskError);
  Gate gate;
  auto held_a = rt.task(hold).remote(gate, 1);
  auto held_b = rt.task(hold).remote(gate, 2);
  std::vector<prism::ObjectRef<int>> waiting;
  for (int i = 0; i < 5; ++i) waiting.push_back(rt.task(plus_one).remote(held_a));
  auto s = rt.stats();
  for (auto deadline = Clock::now() + kTimeout; s.tasks.running < 2 && Clock::now() < deadline;) {
    std::this_thread::yield();
    s = rt.stats();
  }
  ASSERT_EQ(s.tasks.running, 2u);

  const std::string dom_path = dir + "/dashboard-dom.html";
  ASSERT_TRUE(run_chromium(url, {"--dump-dom"}, dom_path, profile))
      << "chromium failed; its output: " << read_file(dom_path).substr(0, 2000);
  const std::string dom = read_file(dom_path);
  EXPECT_NE(dom.find("<title>Prism dashboard</title>"), std::string::npos) << dom.substr(0, 2000);
  EXPECT_NE(dom.find("id=\"status\" class=\"status\">live"), std::string::npos)
      << "the page did not load its data: " << dom.substr(0, 3000);
  EXPECT_NE(dom.find("id=\"node-id\">" + rt.node_id() + "<"), std::string::npos);
  EXPECT_NE(dom.find("data-node=\"" + rt.node_id() + "\""), std::string::npos);
  EXPECT_NE(dom.find("data-resource=\"CPU\""), std::string::npos);
  EXPECT_NE(dom.find("id=\"count-done\">30<"), std::string::npos);
  EXPECT_NE(dom.find("id=\"count-failed\" class=\"failed\">2<"), std::string::npos);
  EXPECT_NE(dom.find("id=\"count-running\">2<"), std::string::npos);
  EXPECT_NE(dom.find("id=\"count-waiting_for_arguments\">5<"), std::string::npos);
  EXPECT_EQ(count_of(dom, "class=\"error\""), 2u);
  EXPECT_NE(dom.find("&lt;img src=x onerror="), std::string::npos) << "the hostile name as text";
  EXPECT_EQ(dom.find("<img"), std::string::npos) << "markup from a task name became an element";
  EXPECT_NE(dom.find("dashboard-test: bad pixel 42"), std::string::npos);
  EXPECT_NE(dom.find("class=\"function\">pixel_check<"), std::string::npos);
  EXPECT_GE(count_of(dom, "data-name=\"plus_one\""), 30u) << "the timeline shows the runs";
  EXPECT_NE(dom.find("data-state=\"running\""), std::string::npos) << "the history chart";

  // The screenshot, kept as an artifact of the test.
  const std::string png = dir + "/dashboard.png";
  std::filesystem::remove(png);
  EXPECT_TRUE(run_chromium(url, {"--screenshot=" + png, "--window-size=1280,1000",
                                 "--hide-scrollbars"},
                           dir + "/chromium-screenshot.log", profile));
  EXPECT_GT(std::filesystem::exists(png) ? std::filesystem::file_size(png) : 0, 10000u);

  // Without the token the browser gets the refusal, not the page's data.
  const std::string plain = "http://" + u.host + ":" + std::to_string(u.port) + "/";
  const std::string refused_path = dir + "/dashboard-refused.html";
  ASSERT_TRUE(run_chromium(plain, {"--dump-dom"}, refused_path, profile + "-fresh"));
  const std::string refused = read_file(refused_path);
  EXPECT_NE(refused.find("not authorised"), std::string::npos) << refused.substr(0, 1000);
  EXPECT_EQ(refused.find("count-done"), std::string::npos);
  std::filesystem::remove_all(profile);
  std::filesystem::remove_all(profile + "-fresh");

  gate.open();
  for (auto& w : waiting) EXPECT_EQ(prism::get(w, kTimeout), 2);
  EXPECT_EQ(prism::get(held_b, kTimeout), 2);
#endif
}

}  // namespace
