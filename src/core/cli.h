// cli.h: bertd's command line, Ernie's options plus nginx's -t. Parsing only; no
// side effects beyond the returned Options.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace bertd {

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Options {
    enum class Command { Start, ReloadHandlers, Stats, Halt, Help, Version } command = Command::Start;
    std::string config;       // -c
    int port = -1;            // -p (overrides the config)
    int log_level = -1;       // -l 0..4
    std::string access_log;   // -a
    bool daemon = false;      // -d
    std::string pidfile;      // -P
    std::string name, sname;  // --name, --sname (Erlang node name)
    std::string cookie;  // --cookie (Erlang distribution cookie), else --cookie-file's, else $BERTD_COOKIE
    std::string cookie_file;  // --cookie-file
    std::string user;         // -u (children run as this user; overrides the config's)
    std::string erlang_opts;  // -E
    bool test_config = false; // -t
    std::string host = "127.0.0.1";  // commands: where the server listens (-H)
    std::string listen;  // the server: the address to listen on (-H, --listen; overrides the config)
};

// Throws UsageError. The text of --cookie is wiped from argv once copied, so that ps
// never shows it (in this process nor in any process forked from it).
Options parse_options(int argc, char** argv);
// The cookie from --cookie-file or $BERTD_COOKIE when --cookie gave none; BERTD_COOKIE
// leaves the environment either way (no handler inherits it). Throws ConfigError.
void resolve_cookie(Options& o);
std::string usage_text();
std::string version_text();
const char* version();  // "0.1.0": debian/changelog's, through the Makefile

}  // namespace bertd
