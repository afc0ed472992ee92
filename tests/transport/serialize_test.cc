// prism/serialize.h and prism/cereal.h: what crosses a process boundary comes back equal, and
// malformed bytes are refused with a clear error, never read past or trusted for allocation.
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <gtest/gtest.h>
#include <prism/cereal.h>
#include <prism/errors.h>
#include <prism/serialize.h>

namespace {

struct Point {
  double x;
  float y;
  int32_t id;
};

struct Doc {  // not trivially copyable: through cereal
  std::string title;
  std::vector<int> pages;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(title, pages);
  }
  bool operator==(const Doc&) const = default;
};

struct Custom {  // its own Serializer
  std::string name;
  int weight = 0;
};

template <typename T>
T round_trip(const T& v) {
  return prism::from_bytes<T>(prism::to_bytes(v));
}

void expect_malformed(const std::string& what, auto&& fn) {
  try {
    fn();
    ADD_FAILURE() << what << ": no error";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << what;
    EXPECT_NE(std::string(e.what()).find("malformed"), std::string::npos) << e.what();
  }
}

}  // namespace

template <>
struct prism::Serializer<Custom> {
  static void write(Writer& w, const Custom& c) {
    w.put(c.name);
    w.put(c.weight);
  }
  static void read(Reader& r, Custom* c) {
    r.get(&c->name);
    r.get(&c->weight);
  }
};

namespace {

static_assert(prism::is_serializable_v<int>);
static_assert(prism::is_serializable_v<Point>);
static_assert(prism::is_serializable_v<std::vector<Point>>);
static_assert(prism::is_serializable_v<std::map<std::string, std::vector<double>>>);
static_assert(prism::is_serializable_v<Doc>);
static_assert(prism::is_serializable_v<Custom>);
static_assert(!prism::is_serializable_v<int*>);
static_assert(!prism::is_serializable_v<std::string_view>);
static_assert(!prism::is_serializable_v<std::vector<int*>>);

TEST(Serialize, ValuesComeBackEqual) {
  EXPECT_EQ(round_trip(42), 42);
  EXPECT_EQ(round_trip(-1.5), -1.5);
  const Point p{1.25, -2.5f, 7};
  const Point q = round_trip(p);
  EXPECT_EQ(q.x, p.x);
  EXPECT_EQ(q.y, p.y);
  EXPECT_EQ(q.id, p.id);
  EXPECT_EQ(round_trip(std::string()), "");
  EXPECT_EQ(round_trip(std::string("hello\0world", 11)), std::string("hello\0world", 11));
  const std::vector<double> v{1, 2, 3.5};
  EXPECT_EQ(round_trip(v), v);
  const std::vector<std::string> vs{"a", "", "ccc"};
  EXPECT_EQ(round_trip(vs), vs);
  const std::vector<bool> vb{true, false, true};
  EXPECT_EQ(round_trip(vb), vb);
  const std::array<std::string, 2> as{"x", "y"};
  EXPECT_EQ(round_trip(as), as);
  const auto t = std::make_tuple(1, std::string("two"), 3.0);
  EXPECT_EQ(round_trip(t), t);
  const std::pair<std::string, int> pr{"k", 9};
  EXPECT_EQ(round_trip(pr), pr);
  const std::optional<std::string> some("s"), none;
  EXPECT_EQ(round_trip(some), some);
  EXPECT_EQ(round_trip(none), none);
  const std::map<std::string, std::vector<int>> m{{"a", {1, 2}}, {"b", {}}};
  EXPECT_EQ(round_trip(m), m);
  const std::unordered_map<int, std::string> um{{1, "one"}, {2, "two"}};
  EXPECT_EQ(round_trip(um), um);
  const Doc d{"title", {1, 2, 3}};
  EXPECT_EQ(round_trip(d), d);
  const Custom c = round_trip(Custom{"w", 3});
  EXPECT_EQ(c.name, "w");
  EXPECT_EQ(c.weight, 3);
  EXPECT_EQ(round_trip(std::tuple<>()), std::tuple<>());
}

TEST(Serialize, MalformedBytesAreRefused) {
  const std::string s = prism::to_bytes(std::string("hello"));
  expect_malformed("truncated string", [&] { prism::from_bytes<std::string>(s.substr(0, 6)); });
  expect_malformed("left over", [&] { prism::from_bytes<std::string>(s + "x"); });
  expect_malformed("empty int", [&] { prism::from_bytes<int>(""); });
  // A count far beyond what the bytes can hold is refused before anything is allocated.
  std::string huge("\xff\xff\xff\xff", 4);
  expect_malformed("huge vector", [&] { prism::from_bytes<std::vector<double>>(huge); });
  expect_malformed("huge string vector",
                   [&] { prism::from_bytes<std::vector<std::string>>(huge); });
  expect_malformed("huge map", [&] { prism::from_bytes<std::map<int, int>>(huge); });
  expect_malformed("bad optional", [&] { prism::from_bytes<std::optional<int>>("\x02"); });
  const std::string doc = prism::to_bytes(Doc{"t", {1, 2, 3}});
  expect_malformed("truncated cereal blob", [&] {
    std::string cut = doc.substr(0, doc.size() - 2);
    cut[0] = static_cast<char>(cut.size() - 4);  // a consistent outer length, a cut inner value
    prism::from_bytes<Doc>(cut);
  });
}

}  // namespace
