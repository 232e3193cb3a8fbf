// listen_config.h: where bertd listens, as the config says it: Ernie's `listen: ADDR`
// with `port: N`, or `listen` as one entry or a list of entries, each with its options
// (the PROXY protocol, a unix socket's mode and owner). Pure parsing and checking;
// nothing here opens a socket.
#pragma once

#include <string>
#include <vector>

namespace YAML {
class Node;
}

namespace bertd {

struct Config;

struct ListenConfig {
    std::string address;          // as written: "127.0.0.1:8000", "[::1]:8000", "::1", "unix:/run/b.sock"
    bool proxy_protocol = false;  // a PROXY header (v1 or v2) comes before the client's bytes
    int mode = -1;                // unix: the socket file's permission bits (-1: as the umask leaves them)
    std::string owner, group;     // unix: the socket file's owner and group (the master is root)
    std::string where;            // "file:line", for messages
};

// One place to listen, resolved.
struct ListenAddress {
    bool unix_socket = false;
    std::string host;  // numeric IPv4 or IPv6, without brackets
    int port = 0;
    std::string path;  // a unix socket's file
    // "127.0.0.1:8000", "[::1]:8000", "unix:/run/bertd.sock": also the key that tells two apart.
    std::string text() const;
};

// "127.0.0.1:8000", "[::1]:8000", an address without a port ("0.0.0.0", "::1": `default_port`),
// or "unix:/absolute/path". Throws std::invalid_argument saying what is wrong.
ListenAddress parse_listen_address(const std::string& text, int default_port);

// The entries the server listens on: the config's list, or its `listen` and `port`.
std::vector<ListenConfig> listen_entries(const Config& c);

constexpr int kMetricsPort = 9464;  // Prometheus's customary exporter port, for `metrics: {listen: ADDR}`

// "127.0.0.1:8000, unix:/run/bertd.sock (proxy_protocol)" for logs and systemd's status.
std::string listen_text(const Config& c);

// The `listen` key when it is a mapping (one entry) or a list (scalars or mappings).
// Throws ConfigError naming `path` and the line.
std::vector<ListenConfig> yaml_listen(const YAML::Node& n, const std::string& path);

// Every entry resolves, no two share an address, unix options only on unix sockets, and
// proxy_protocol_from holds addresses or ranges. Throws ConfigError.
void validate_listen(const Config& c);

}  // namespace bertd
