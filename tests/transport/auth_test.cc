// Auth: tokens and challenges are random, macs verify only with the right token, label and
// challenge, and compute_mac is HMAC-SHA256 exactly (a known answer computed with openssl).

#include "auth.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace prism::cluster {
namespace {

// A challenge of the bytes 0x00, 0x01, ..., 0x1f (it starts with a NUL on purpose).
void counting_challenge(uint8_t out[kChallengeBytes]) {
  for (size_t i = 0; i < kChallengeBytes; ++i) out[i] = static_cast<uint8_t>(i);
}

std::string to_hex(const uint8_t* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s.push_back(kHex[p[i] >> 4]);
    s.push_back(kHex[p[i] & 0xF]);
  }
  return s;
}

TEST(AuthTest, NewTokenIs64LowercaseHexCharacters) {
  const std::string token = new_token();
  ASSERT_EQ(token.size(), 64u);
  for (char c : token) {
    EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << "character " << c;
  }
}

TEST(AuthTest, TwoTokensDiffer) { EXPECT_NE(new_token(), new_token()); }

TEST(AuthTest, TwoChallengesDiffer) {
  uint8_t a[kChallengeBytes] = {};
  uint8_t b[kChallengeBytes] = {};
  new_challenge(a);
  new_challenge(b);
  EXPECT_NE(std::memcmp(a, b, kChallengeBytes), 0);
  const uint8_t zero[kChallengeBytes] = {};
  EXPECT_NE(std::memcmp(a, zero, kChallengeBytes), 0);
}

TEST(AuthTest, MacVerifiesWithTheRightTokenLabelAndChallenge) {
  const std::string token = new_token();
  uint8_t challenge[kChallengeBytes];
  new_challenge(challenge);
  uint8_t mac[kMacBytes];
  compute_mac(token, kJoinLabel, challenge, mac);
  EXPECT_TRUE(verify_mac(token, kJoinLabel, challenge, mac));
}

TEST(AuthTest, MacFailsWithAWrongToken) {
  const std::string token = new_token();
  uint8_t challenge[kChallengeBytes];
  new_challenge(challenge);
  uint8_t mac[kMacBytes];
  compute_mac(token, kJoinLabel, challenge, mac);
  EXPECT_FALSE(verify_mac(new_token(), kJoinLabel, challenge, mac));
  // One character off, and a prefix of the right token.
  std::string off_by_one = token;
  off_by_one.back() = off_by_one.back() == '0' ? '1' : '0';
  EXPECT_FALSE(verify_mac(off_by_one, kJoinLabel, challenge, mac));
  EXPECT_FALSE(verify_mac(token.substr(0, 63), kJoinLabel, challenge, mac));
  EXPECT_FALSE(verify_mac("", kJoinLabel, challenge, mac));
}

TEST(AuthTest, MacFailsWithTheOtherLabel) {
  // A join proof must not pass as a welcome proof (and the other way round).
  const std::string token = new_token();
  uint8_t challenge[kChallengeBytes];
  new_challenge(challenge);
  uint8_t join[kMacBytes];
  uint8_t welcome[kMacBytes];
  compute_mac(token, kJoinLabel, challenge, join);
  compute_mac(token, kWelcomeLabel, challenge, welcome);
  EXPECT_FALSE(verify_mac(token, kWelcomeLabel, challenge, join));
  EXPECT_FALSE(verify_mac(token, kJoinLabel, challenge, welcome));
  EXPECT_NE(std::memcmp(join, welcome, kMacBytes), 0);
}

TEST(AuthTest, MacFailsWhenAnyChallengeByteChanges) {
  const std::string token = new_token();
  uint8_t challenge[kChallengeBytes];
  new_challenge(challenge);
  uint8_t mac[kMacBytes];
  compute_mac(token, kJoinLabel, challenge, mac);
  for (size_t i = 0; i < kChallengeBytes; ++i) {
    uint8_t changed[kChallengeBytes];
    std::memcpy(changed, challenge, kChallengeBytes);
    changed[i] ^= 0x01;
    EXPECT_FALSE(verify_mac(token, kJoinLabel, changed, mac)) << "challenge byte " << i;
  }
}

TEST(AuthTest, MacFailsWhenAnyMacByteChanges) {
  const std::string token = new_token();
  uint8_t challenge[kChallengeBytes];
  new_challenge(challenge);
  uint8_t mac[kMacBytes];
  compute_mac(token, kJoinLabel, challenge, mac);
  for (size_t i = 0; i < kMacBytes; ++i) {
    uint8_t changed[kMacBytes];
    std::memcpy(changed, mac, kMacBytes);
    changed[i] ^= 0x80;
    EXPECT_FALSE(verify_mac(token, kJoinLabel, challenge, changed)) << "mac byte " << i;
  }
}

TEST(AuthTest, MacIsHmacSha256OfLabelThenChallenge) {
  uint8_t challenge[kChallengeBytes];
  counting_challenge(challenge);
  uint8_t mac[kMacBytes];

  // In bash:
  //   printf 'prism-join\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f' | openssl dgst -sha256 -hmac 'prism-test-token'
  constexpr const char* kJoinMac =
      "8b129d29662c3d572d81c8c8f7085f22f844a44e268887c48897e0966ab7437b";
  compute_mac("prism-test-token", kJoinLabel, challenge, mac);
  EXPECT_EQ(to_hex(mac, kMacBytes), kJoinMac);

  // In bash:
  //   printf 'prism-welcome\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f' | openssl dgst -sha256 -hmac 'prism-test-token'
  constexpr const char* kWelcomeMac =
      "47b4c27298f849619fb8bf756ec103867e6c6d06bc6db6c9c9811735cb86b05f";
  compute_mac("prism-test-token", kWelcomeLabel, challenge, mac);
  EXPECT_EQ(to_hex(mac, kMacBytes), kWelcomeMac);
}

TEST(AuthTest, AnEmptyTokenStillGivesAMac) {
  // Not a token new_token() makes, but compute_mac must not trip over an empty key.
  uint8_t challenge[kChallengeBytes];
  counting_challenge(challenge);
  uint8_t mac[kMacBytes];
  compute_mac("", kJoinLabel, challenge, mac);
  EXPECT_TRUE(verify_mac("", kJoinLabel, challenge, mac));
  EXPECT_FALSE(verify_mac("x", kJoinLabel, challenge, mac));
}

}  // namespace
}  // namespace prism::cluster
