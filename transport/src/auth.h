// auth.h — the job's token and the HMAC-SHA256 challenge-response that every peer passes before
// any other message from it is acted on.
//
//   listener                              joiner
//   Hello{challenge S}            ->
//                                 <-      Auth{mac = HMAC(token, "prism-join" || S), C, ...}
//   verify; Welcome{HMAC(token, "prism-welcome" || C), index}  ->   verify
//
// Both sides prove the token: a joiner never serves a fake driver either. Challenges are 32
// random bytes from the OS (RAND_bytes); macs are compared in constant time.
//
// Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "wire.h"

namespace prism::cluster {

// A new random token: 64 lowercase hex characters (32 random bytes).
std::string new_token();
// Fills `out` with kChallengeBytes random bytes. Throws prism::Error(kInternal) if the OS gives
// none.
void new_challenge(uint8_t out[kChallengeBytes]);
// HMAC-SHA256(token, label || challenge).
void compute_mac(std::string_view token, std::string_view label,
                 const uint8_t challenge[kChallengeBytes], uint8_t out[kMacBytes]);
// Constant-time check of `mac` against HMAC-SHA256(token, label || challenge).
bool verify_mac(std::string_view token, std::string_view label,
                const uint8_t challenge[kChallengeBytes], const uint8_t mac[kMacBytes]);

inline constexpr std::string_view kJoinLabel = "prism-join";
inline constexpr std::string_view kWelcomeLabel = "prism-welcome";
// The same handshake between two nodes of a job (a direct connection, for pulls).
inline constexpr std::string_view kPeerLabel = "prism-peer";
inline constexpr std::string_view kPeerWelcomeLabel = "prism-peer-welcome";

}  // namespace prism::cluster
