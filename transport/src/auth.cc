#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <climits>
#include <string>

#include "prism/errors.h"

namespace prism::cluster {
namespace {

constexpr size_t kTokenBytes = 32;  // new_token(): 32 random bytes, 64 hex characters

// Fills `out` with `n` bytes from OpenSSL's CSPRNG (seeded by the OS). Throws kInternal if it
// has none to give: a predictable challenge or token would defeat the handshake.
void random_bytes(uint8_t* out, size_t n) {
  if (n > static_cast<size_t>(INT_MAX) || RAND_bytes(out, static_cast<int>(n)) != 1) {
    throw Error(ErrorCode::kInternal, "auth: RAND_bytes failed: no random bytes from the OS");
  }
}

}  // namespace

std::string new_token() {
  uint8_t bytes[kTokenBytes];
  random_bytes(bytes, kTokenBytes);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token;
  token.reserve(2 * kTokenBytes);
  for (uint8_t b : bytes) {
    token.push_back(kHex[b >> 4]);
    token.push_back(kHex[b & 0xF]);
  }
  OPENSSL_cleanse(bytes, sizeof bytes);
  return token;
}

void new_challenge(uint8_t out[kChallengeBytes]) { random_bytes(out, kChallengeBytes); }

// HMAC-SHA256 keyed with the token over label || challenge (the label first, so that a mac for
// one step of the handshake never passes as one for the other). Throws kInternal if OpenSSL
// fails: that is a broken installation, not a bad peer.
void compute_mac(std::string_view token, std::string_view label,
                 const uint8_t challenge[kChallengeBytes], uint8_t out[kMacBytes]) {
  if (token.size() > static_cast<size_t>(INT_MAX)) {
    throw Error(ErrorCode::kInvalidArgument, "auth: the token is too long");
  }
  std::string message;
  message.reserve(label.size() + kChallengeBytes);
  message.append(label);
  message.append(reinterpret_cast<const char*>(challenge), kChallengeBytes);

  // HMAC() wants a non-null key even when it is empty.
  static const char kEmptyKey[1] = {0};
  const void* key = token.empty() ? kEmptyKey : token.data();
  unsigned int mac_len = 0;
  const unsigned char* mac =
      HMAC(EVP_sha256(), key, static_cast<int>(token.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &mac_len);
  if (mac == nullptr || mac_len != kMacBytes) {
    throw Error(ErrorCode::kInternal, "auth: HMAC-SHA256 failed in OpenSSL");
  }
}

bool verify_mac(std::string_view token, std::string_view label,
                const uint8_t challenge[kChallengeBytes], const uint8_t mac[kMacBytes]) {
  uint8_t expected[kMacBytes];
  compute_mac(token, label, challenge, expected);
  // Constant time: how many leading bytes of a forged mac match must not show in the timing.
  const bool ok = CRYPTO_memcmp(expected, mac, kMacBytes) == 0;
  OPENSSL_cleanse(expected, sizeof expected);
  return ok;
}

}  // namespace prism::cluster
