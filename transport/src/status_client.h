// status_client.h — `prism status`: asks a running job's driver how it stands.
//
// Connects as a client (not a node: its coming and going is no node event), proves the job's
// token like a node (auth.h, role kClient; a client's binary is not compared with the driver's),
// sends StatusQuery and returns the driver's text.
//
// Thread-safe: each call uses its own UcxComm.
#pragma once

#include <string>

namespace prism::cluster {

// The status text of the driver at `address` ("host:port"), authenticated with `token`. Throws
// prism::Error(kUnavailable) if the driver cannot be reached or refuses, TimeoutError if it does
// not answer within `timeout_s`.
std::string query_status(const std::string& address, const std::string& token, double timeout_s);

}  // namespace prism::cluster
