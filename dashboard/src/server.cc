// The dashboard's HTTP server (cpp-httplib, Debian's libcpp-httplib-dev): serves the page and
// its JSON to a browser holding the session cookie, which the login URL (printed at start) sets.
//
// Threads: httplib's listener plus a pool of kServerThreads for requests, and a sampler that
// adds the task counts to the history once per kSampleInterval. Requests read the runtime only
// through RuntimeCore's observability calls (each thread-safe); stop() joins every thread
// before the runtime stops its scheduler (RuntimeCore::shutdown stops the dashboard first).
//
// Authentication (as Jupyter does): the URL printed at start carries a random login token;
// opening it sets an HttpOnly, SameSite=Lax cookie holding a separate random session secret
// and redirects to the page. Every other request needs that cookie, or the login token as
// "Authorization: Bearer <token>" (scripts, curl); anything else gets 403. Both secrets are
// compared in constant time. The cookie is named after the port (prism_session_<port>): cookies
// are not kept apart by port, and two dashboards on one host must not overwrite each other's.
// Lax, not Strict: a login link opened from another site (a notebook, a chat) must carry the
// cookie through the redirect; every route is a read-only GET, and other origins cannot read
// the answers (no CORS headers).
#include <sys/random.h>
#include <sys/socket.h>

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "api/dashboard_hook.h"
#include "api/runtime_core.h"
#include "assets.h"
#include "common/log.h"
#include "history.h"
#include "prism/errors.h"
#include "report.h"

// Referenced by Prism::dashboard's link options so that this object (and its registration) is
// kept in every program that links the module.
extern "C" {
extern const int prism_dashboard_module_anchor;
const int prism_dashboard_module_anchor = 1;
}

namespace prism::dashboard {

namespace {

using internal::RuntimeCore;
using Clock = internal::Timeline::Clock;

constexpr int kServerThreads = 4;
constexpr auto kSampleInterval = std::chrono::seconds(1);
constexpr size_t kHistorySamples = 600;  // ten minutes

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    const ssize_t n = getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorCode::kInternal, "dashboard: no random bytes for its token (getrandom)");
    }
    got += static_cast<size_t>(n);
  }
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// The value of cookie `name` in a Cookie header ("a=1; name=v; b=2"), or empty.
std::string_view cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const size_t end = header.find(';');
    std::string_view item = header.substr(0, end);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    if (item.size() > name.size() && item.substr(0, name.size()) == name &&
        item[name.size()] == '=') {
      return item.substr(name.size() + 1);
    }
    if (end == std::string_view::npos) break;
    header.remove_prefix(end + 1);
  }
  return {};
}

// "host:port", ":port" or "port" (host 127.0.0.1). Throws kInvalidArgument.
std::pair<std::string, int> parse_address(const std::string& address) {
  const size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? "" : address.substr(0, colon);
  const std::string port_text = colon == std::string::npos ? address : address.substr(colon + 1);
  if (host.empty()) host = "127.0.0.1";
  int port = -1;
  if (!port_text.empty() && port_text.size() <= 5 &&
      port_text.find_first_not_of("0123456789") == std::string::npos) {
    port = std::stoi(port_text);
  }
  if (port < 0 || port > 65535) {
    throw Error(ErrorCode::kInvalidArgument,
                "dashboard address '" + address +
                    "': expected host:port (e.g. 127.0.0.1:8265, port 0 for one from the OS)");
  }
  return {host, port};
}

class Server final : public internal::DashboardServer {
 public:
  Server(RuntimeCore* rt, const std::string& address)
      : rt_(rt), login_token_(random_hex(16)), session_(random_hex(16)),
        history_(kHistorySamples) {
    auto [host, port] = parse_address(address);
    svr_.new_task_queue = [] { return new httplib::ThreadPool(kServerThreads); };
    // httplib's default also sets SO_REUSEPORT, which lets a second server share the port
    // silently: only SO_REUSEADDR (a restart may reuse a port in TIME_WAIT).
    svr_.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    // A browser keeps connections open: a short keep-alive frees pool threads soon, and stop()
    // waits at most this long for an idle connection.
    svr_.set_keep_alive_timeout(1);
    svr_.set_read_timeout(5);
    svr_.set_write_timeout(5);
    routes();
    const int bound = port == 0 ? svr_.bind_to_any_port(host) : (svr_.bind_to_port(host, port) ? port : -1);
    if (bound <= 0) {
      throw Error(ErrorCode::kUnavailable,
                  "dashboard: cannot listen on " + host + ":" + std::to_string(port) +
                      " (in use, or not an address of this machine)");
    }
    url_ = "http://" + (host == "0.0.0.0" ? std::string("127.0.0.1") : host) + ":" +
           std::to_string(bound) + "/?token=" + login_token_;
    cookie_ = "prism_session_" + std::to_string(bound);
    if (host != "127.0.0.1" && host != "localhost") {
      PRISM_LOG(kWarning) << "the dashboard listens on " << host
                          << ", not only loopback: anyone who can reach it still needs the token";
    }
    sample();  // the chart starts with a point
    listener_ = std::thread([this] {
      svr_.listen_after_bind();
      listener_done_.store(true, std::memory_order_release);
    });
    // httplib 0.11 ignores a stop() that comes before its loop has started and has no ready
    // event: wait until it runs (microseconds), so that stop() always ends it, or has returned.
    while (!svr_.is_running() && !listener_done_.load(std::memory_order_acquire)) {
      std::this_thread::yield();
    }
    if (!svr_.is_running()) {
      listener_.join();
      throw Error(ErrorCode::kUnavailable, "dashboard: its HTTP server stopped at once");
    }
    try {
      sampler_ = std::thread([this] { sample_loop(); });
    } catch (...) {
      stop();
      throw;
    }
  }

  ~Server() override { stop(); }

  std::string url() const override { return url_; }

  void stop() noexcept override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    wake_.notify_all();
    svr_.stop();
    if (listener_.joinable()) listener_.join();
    if (sampler_.joinable()) sampler_.join();
  }

 private:
  bool authorised(const httplib::Request& req) const {
    const std::string cookie = req.get_header_value("Cookie");
    if (same_secret(cookie_value(cookie, cookie_), session_)) return true;
    const std::string auth = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    return auth.size() > kBearer.size() && std::string_view(auth).substr(0, kBearer.size()) == kBearer &&
           same_secret(std::string_view(auth).substr(kBearer.size()), login_token_);
  }

  static void refuse(httplib::Response& res) {
    res.status = 403;
    res.set_header("Cache-Control", "no-store");
    res.set_content(
        "Prism dashboard: not authorised. Open the URL Prism printed at start (it carries the "
        "token: http://host:port/?token=...), or send Authorization: Bearer <token>.\n",
        "text/plain; charset=utf-8");
  }

  static void common_headers(httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("X-Frame-Options", "DENY");
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:");
  }

  void routes() {
    for (const Asset* a = kAssets; !a->path.empty(); ++a) {
      svr_.Get(std::string(a->path), [this, a](const httplib::Request& req, httplib::Response& res) {
        if (a->path == "/" && req.has_param("token")) {
          // The login URL: trade the token for the session cookie, then show the page.
          if (!same_secret(req.get_param_value("token"), login_token_)) return refuse(res);
          res.set_header("Set-Cookie",
                         cookie_ + "=" + session_ + "; HttpOnly; SameSite=Lax; Path=/");
          res.set_redirect("/");
          return;
        }
        if (!authorised(req)) return refuse(res);
        common_headers(res);
        res.set_content(std::string(a->body), std::string(a->content_type) + "; charset=utf-8");
      });
    }
    svr_.Get("/api/summary", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorised(req)) return refuse(res);
      common_headers(res);
      res.set_content(summary(), "application/json");
    });
    svr_.Get("/api/timeline", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorised(req)) return refuse(res);
      double window_ms = 60000;
      if (req.has_param("window_ms")) {
        try {
          window_ms = std::stod(req.get_param_value("window_ms"));
        } catch (...) {
          window_ms = -1;
        }
        if (!(window_ms >= 100 && window_ms <= 600000)) {
          res.status = 400;
          res.set_content("window_ms: a number of milliseconds from 100 to 600000\n", "text/plain");
          return;
        }
      }
      common_headers(res);
      res.set_content(timeline(window_ms), "application/json");
    });
  }

  std::string summary() {
    SummaryInput in;
    in.node = rt_->node_id();
    in.role = rt_->role() == internal::ClusterRole::kDriver ? "driver" : "embedded";
    in.uptime_s = std::chrono::duration<double>(Clock::now() - rt_->started_at()).count();
    in.stats = rt_->stats();
    in.errors = rt_->errors();
    in.history = history_.snapshot();
    in.history_interval_ms = std::chrono::duration<double, std::milli>(kSampleInterval).count();
    return summary_json(in);
  }

  std::string timeline(double window_ms) {
    TimelineInput in;
    in.node = rt_->node_id();
    in.origin = rt_->started_at();
    in.now = Clock::now();
    in.window_ms = window_ms;
    const auto since = in.now - std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double, std::milli>(window_ms));
    in.lanes.push_back({in.node, rt_->recent_spans(since, kMaxSpansShown)});
    in.max_spans = kMaxSpansShown;
    // A cluster's driver shows every node's runs (nodes keep their newest when PRISM_DASHBOARD
    // reached them too, or all with a timeline); a node slow to answer is named, not waited for.
    if (internal::ClusterLink* l = rt_->link();
        l != nullptr && rt_->role() == internal::ClusterRole::kDriver) {
      for (auto& n : l->gather_spans(internal::deadline_after(std::chrono::seconds(2)), since,
                                     kMaxSpansShown, &in.missing)) {
        if (!n.recording) continue;
        in.truncated = in.truncated || n.truncated;
        in.lanes.push_back({std::move(n.node), std::move(n.spans)});
      }
    }
    return timeline_json(in);
  }

  void sample() {
    Sample s;
    s.t_ms = std::chrono::duration<double, std::milli>(Clock::now() - rt_->started_at()).count();
    s.tasks = rt_->stats().tasks;
    history_.add(s);
  }

  void sample_loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      if (wake_.wait_for(lock, kSampleInterval, [this] { return stopping_; })) break;
      lock.unlock();
      sample();
      lock.lock();
    }
  }

  RuntimeCore* const rt_;
  const std::string login_token_;
  const std::string session_;
  std::string url_;
  std::string cookie_;  // the session cookie's name
  History history_;
  httplib::Server svr_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};  // listen_after_bind returned
  std::thread sampler_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mu_
};

std::unique_ptr<internal::DashboardServer> start(RuntimeCore* rt, const std::string& address) {
  return std::make_unique<Server>(rt, address);
}

const internal::DashboardModule kModule{&start};

// Registers the module with core when the program starts.
[[maybe_unused]] const bool g_registered = [] {
  internal::set_dashboard_module(&kModule);
  return true;
}();

}  // namespace

}  // namespace prism::dashboard
