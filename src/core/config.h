// config.h: bertd's configuration, read from YAML (bertd.yaml) or from an Ernie
// .cfg file of dotted Erlang terms. Loading validates everything and throws
// ConfigError naming the file and line; nothing starts on a bad config.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/credentials.h"
#include "core/listen_config.h"

namespace bertd {

struct ConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct ModuleConfig {
    enum class Type { External, Native };
    std::string name;
    Type type = Type::External;
    std::string command;  // external: run through /bin/sh -c
    int count = 1;        // external: number of workers
    double timeout = 0;   // seconds a request may take on a worker; 0 = no limit
    std::vector<std::string> codepaths;  // native (Ernie form): companion VM code paths
    std::string node;                    // native: an existing node to run on
    size_t cache_size = 0;               // external: bertd's own cache of public answers (0: none)
    bool ernie_floats = false;           // float_format: ernie: floats cross as FLOAT_EXT both ways
    std::string where;                   // "file:line", for messages
    std::string user, group;             // external: its workers run as this user (else the config's)
    Credentials creds;                   // resolved by resolve_users; unset: the master's own
};

struct Limits {
    size_t max_frame = 32u << 20;     // bytes of one request or answer
    double idle_timeout = 300;        // seconds a connection may sit with nothing to do
    size_t max_connections = 10000;   // per server
    size_t max_queue = 10000;         // waiting requests per module and priority
    size_t max_buffered = 0;          // bytes one acceptor holds for all its connections; 0: from the RAM
    uint64_t max_stream = 0;          // bytes of one streamed request; 0: no bound
    size_t max_inflated = 8u << 20;   // bytes a compressed (tag 80) request may inflate to
    double proxy_header_timeout = 5;  // seconds a PROXY listener waits for a connection's header
};

// BERT-RPC 1.0 callbacks: which services bertd may cast to, and how hard it tries.
struct CallbacksConfig {
    std::vector<std::string> allow;  // "host:port" patterns; the port may be "*"
    double timeout = 5;              // seconds for one attempt
    int retries = 3;                 // attempts after the first
};

// {Name, bertd@host} ! Msg from an Erlang node becomes a cast Module:Function(Msg) on
// an external module.
struct RegisteredName {
    std::string name, module, function;
    std::string where;
};

// The Erlang side (src/erl): bertd's node identity and the link's behaviour.
struct ErlangConfig {
    bool present = false;        // an erlang: section was given (starts the link even without natives)
    std::string name, sname;     // node name, long or short (--name/--sname override both)
    std::string cookie;          // or what cookie_file holds; empty: --cookie, else ~/.erlang.cookie
    std::string cookie_file;     // where the cookie was read from, if it was
    std::string link_name;       // the C-node's own name when a companion VM carries `name`
    bool trust_clients = false;  // send client arguments as terms (may create atoms on the node)
    double call_timeout = 0;     // seconds; native calls without a module timeout, erlang_rpc; 0 = none
    std::string vm_options;      // extra options for the companion VM (-E adds to them)
    std::string ebin;            // where bertd_native.beam is; empty: next to the bertd binary
    std::vector<RegisteredName> registered;
    size_t max_queue = 10000;  // messages (and calls) waiting per registered name, worker pid or module
};

struct Config {
    std::string path;              // the file it came from
    std::string listen = "0.0.0.0";  // Ernie listened on every address
    int port = 8000;
    // `listen` as one entry or a list (core/listen_config.h); empty: `listen` and `port`.
    std::vector<ListenConfig> listeners;
    // Who may send a PROXY header: addresses or ranges ("10.0.0.0/8"); loopback by default.
    std::vector<std::string> proxy_protocol_from = {"127.0.0.0/8", "::1"};
    int acceptors = 0;             // 0: one per core
    std::string access_log;        // empty: none
    bool access_log_extended = false;  // access_log_format: extended (the client's address in each line)
    std::string error_log;         // empty: stderr
    int log_level = 2;             // 0 (errors only) .. 4 (debug)
    std::string pidfile;
    std::string user, group;               // children run as this user (-u overrides); the master stays root
    std::string user_where;                // "file:line" of user, for messages
    Credentials creds;                     // resolved by resolve_users (core/credentials.h)
    std::vector<std::string> admin_allow;  // addresses allowed __admin__ besides loopback
    double drain_timeout = 0;              // seconds a graceful stop keeps serving while health says draining
    std::string metrics_listen;            // metrics: {listen: ADDR}: GET /metrics there; empty: none
    std::string metrics_where;             // "file:line" of it
    Limits limits;
    CallbacksConfig callbacks;
    std::vector<ModuleConfig> modules;
    ErlangConfig erlang;

    const ModuleConfig* find_module(const std::string& name) const;
    const ModuleConfig* find_module(const std::string& name, ModuleConfig::Type type) const;
    bool has_native() const;
};

// Reads and validates `path`. YAML unless the file name ends in .cfg or its
// first token is an Erlang term ('[' or '%'). Throws ConfigError.
Config load_config(const std::string& path);

// The same from text already in memory (tests, `bertd -t`); `path` names it in errors.
Config parse_config_text(const std::string& text, const std::string& path);

// Parses sizes like "8MiB", "512k", "1048576"; throws std::invalid_argument.
size_t parse_size(const std::string& text);
// Parses durations like "30", "30s", "500ms", "5m"; in seconds. Throws std::invalid_argument.
double parse_duration(const std::string& text);

// The first line of a file holding a secret (a cookie), without trailing blanks.
// Throws ConfigError naming the file when it cannot be read or holds nothing.
std::string read_secret_file(const std::string& path);

}  // namespace bertd
