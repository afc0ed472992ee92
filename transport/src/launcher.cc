#include "launcher.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "prism/errors.h"

#if PRISM_HAVE_PMIX
#include <pmix.h>
#endif

namespace prism::cluster {

bool started_by_launcher() { return std::getenv("PMIX_RANK") != nullptr; }

#if PRISM_HAVE_PMIX

namespace {

[[noreturn]] void fail(const char* call, pmix_status_t status) {
  throw Error(ErrorCode::kUnavailable,
              std::string("cluster launcher: ") + call + " failed: " + PMIx_Error_string(status));
}

class PmixSession final : public LauncherSession {
 public:
  PmixSession() {
    const pmix_status_t rc = PMIx_Init(&me_, nullptr, 0);
    if (rc != PMIX_SUCCESS) fail("PMIx_Init", rc);
    size_ = static_cast<int>(get_u32(PMIX_RANK_WILDCARD, PMIX_JOB_SIZE, 1));
    local_size_ = static_cast<int>(get_u32(PMIX_RANK_WILDCARD, PMIX_LOCAL_SIZE, 1));
    local_rank_ = static_cast<int>(get_u32(me_.rank, PMIX_LOCAL_RANK, 0));
  }
  ~PmixSession() override { PMIx_Finalize(nullptr, 0); }

  int rank() const override { return static_cast<int>(me_.rank); }
  int size() const override { return size_; }
  int local_size() const override { return local_size_ > 0 ? local_size_ : 1; }
  int local_rank() const override {
    return local_rank_ >= 0 && local_rank_ < local_size() ? local_rank_ : 0;
  }

  void publish(const std::string& key, const std::string& value) override {
    pmix_value_t v;
    PMIX_VALUE_CONSTRUCT(&v);
    v.type = PMIX_STRING;
    v.data.string = const_cast<char*>(value.c_str());
    pmix_status_t rc = PMIx_Put(PMIX_GLOBAL, key.c_str(), &v);
    if (rc != PMIX_SUCCESS) fail("PMIx_Put", rc);
    rc = PMIx_Commit();
    if (rc != PMIX_SUCCESS) fail("PMIx_Commit", rc);
  }

  void fence() override {
    pmix_proc_t all;
    PMIX_LOAD_PROCID(&all, me_.nspace, PMIX_RANK_WILDCARD);
    pmix_info_t info;
    PMIX_INFO_CONSTRUCT(&info);
    bool collect = true;
    PMIX_INFO_LOAD(&info, PMIX_COLLECT_DATA, &collect, PMIX_BOOL);
    const pmix_status_t rc = PMIx_Fence(&all, 1, &info, 1);
    PMIX_INFO_DESTRUCT(&info);
    if (rc != PMIX_SUCCESS) fail("PMIx_Fence", rc);
  }

  std::string lookup(int rank, const std::string& key) override {
    pmix_proc_t who;
    PMIX_LOAD_PROCID(&who, me_.nspace, static_cast<pmix_rank_t>(rank));
    pmix_value_t* v = nullptr;
    const pmix_status_t rc = PMIx_Get(&who, key.c_str(), nullptr, 0, &v);
    if (rc != PMIX_SUCCESS || v == nullptr) fail("PMIx_Get", rc);
    std::string out = v->type == PMIX_STRING && v->data.string != nullptr ? v->data.string : "";
    PMIX_VALUE_RELEASE(v);
    if (out.empty()) {
      throw Error(ErrorCode::kUnavailable, "cluster launcher: rank " + std::to_string(rank) +
                                               " published no " + key);
    }
    return out;
  }

 private:
  uint32_t get_u32(pmix_rank_t rank, const char* key, uint32_t fallback) {
    pmix_proc_t who;
    PMIX_LOAD_PROCID(&who, me_.nspace, rank);
    pmix_value_t* v = nullptr;
    if (PMIx_Get(&who, key, nullptr, 0, &v) != PMIX_SUCCESS || v == nullptr) return fallback;
    uint32_t out = fallback;
    if (v->type == PMIX_UINT32) out = v->data.uint32;
    if (v->type == PMIX_UINT16) out = v->data.uint16;  // PMIX_LOCAL_RANK is a uint16
    PMIX_VALUE_RELEASE(v);
    return out;
  }

  pmix_proc_t me_{};
  int size_ = 1;
  int local_size_ = 1;
  int local_rank_ = 0;
};

}  // namespace

std::unique_ptr<LauncherSession> start_launcher_session() {
  return std::make_unique<PmixSession>();
}

#else

std::unique_ptr<LauncherSession> start_launcher_session() {
  throw Error(ErrorCode::kUnavailable,
              "this process was started by a PMIx launcher (PMIX_RANK is set) but Prism's "
              "cluster module was built without PMIx (install libpmix-dev and rebuild), or start "
              "the nodes by address (PRISM_LISTEN / PRISM_ADDRESS)");
}

#endif

}  // namespace prism::cluster
