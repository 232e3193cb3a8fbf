// cli.cc: parsing bertd's command line. Every mistake is a UsageError whose text
// says what was wrong; main prints it with the usage and exits non-zero.
#include "core/cli.h"

#include <getopt.h>

#include <cstdlib>
#include <cstring>

#include "core/config.h"

namespace bertd {

// The Makefile defines BERTD_VERSION from debian/changelog.
#ifndef BERTD_VERSION
#define BERTD_VERSION "unknown"
#endif

const char* version() { return BERTD_VERSION; }
std::string version_text() { return std::string("bertd ") + version() + "\n"; }

std::string usage_text() {
    return "Usage: bertd [command] [options]\n"
           "\n"
           "Commands:\n"
           "  (none)            start a server\n"
           "  reload-handlers   replace every handler worker after its current request\n"
           "  stats             print connection and handler statistics\n"
           "  halt              stop accepting, finish requests in flight, exit\n"
           "\n"
           "Options:\n"
           "  -c, --config FILE       config file (YAML or Ernie .cfg)\n"
           "  -p, --port PORT         port (overrides the config)\n"
           "  -H, --host ADDRESS      the address to listen on (overrides the config);\n"
           "                          commands: the server's address (default 127.0.0.1)\n"
           "      --listen ADDRESS    the same as -H\n"
           "  -l, --log-level LEVEL   error log level, 0 (errors) to 4 (debug)\n"
           "  -a, --access-log FILE   access log file\n"
           "  -d, --detached          run as a daemon\n"
           "  -P, --pidfile FILE      where to write the master's pid\n"
           "      --name NAME         Erlang node name (long)\n"
           "      --sname NAME        Erlang node name (short)\n"
           "      --cookie COOKIE     Erlang cookie (default: the config, else ~/.erlang.cookie)\n"
           "      --cookie-file FILE  read the Erlang cookie from FILE ($BERTD_COOKIE works too)\n"
           "  -E, --erlang OPTIONS    options for the companion Erlang VM\n"
           "  -u, --user USER         run the children as USER (a master started as root)\n"
           "  -t, --test              check the config and exit\n"
           "  -h, --help              this text\n"
           "  -v, --version           print the version\n";
}

namespace {
int parse_int(const char* s, const char* what, int lo, int hi) {
    char* end = nullptr;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        throw UsageError(std::string("invalid ") + what + " '" + s + "' (expected " + std::to_string(lo) + ".." +
                         std::to_string(hi) + ")");
    return int(v);
}

void parse_command(const std::vector<std::string>& rest, Options& o) {
    if (rest.size() > 1) throw UsageError("too many commands: '" + rest[1] + "'");
    if (rest.empty()) return;
    const std::string& c = rest[0];
    if (c == "reload-handlers")
        o.command = Options::Command::ReloadHandlers;
    else if (c == "stats")
        o.command = Options::Command::Stats;
    else if (c == "halt")
        o.command = Options::Command::Halt;
    else if (c == "start")
        o.command = Options::Command::Start;
    else
        throw UsageError("unknown command '" + c + "' (known: reload-handlers, stats, halt)");
}
}  // namespace

Options parse_options(int argc, char** argv) {
    Options o;
    static const option longopts[] = {{"config", required_argument, nullptr, 'c'},
                                      {"port", required_argument, nullptr, 'p'},
                                      {"host", required_argument, nullptr, 'H'},
                                      {"log-level", required_argument, nullptr, 'l'},
                                      {"access-log", required_argument, nullptr, 'a'},
                                      {"detached", no_argument, nullptr, 'd'},
                                      {"pidfile", required_argument, nullptr, 'P'},
                                      {"name", required_argument, nullptr, 'N'},
                                      {"sname", required_argument, nullptr, 'S'},
                                      {"erlang", required_argument, nullptr, 'E'},
                                      {"cookie", required_argument, nullptr, 'K'},
                                      {"cookie-file", required_argument, nullptr, 'F'},
                                      {"listen", required_argument, nullptr, 'L'},
                                      {"user", required_argument, nullptr, 'u'},
                                      {"test", no_argument, nullptr, 't'},
                                      {"help", no_argument, nullptr, 'h'},
                                      {"version", no_argument, nullptr, 'v'},
                                      {nullptr, 0, nullptr, 0}};
    optind = 1;
    opterr = 0;
    // '+' would stop at the first non-option; commands may come first or last, so permute.
    int ch;
    while ((ch = getopt_long(argc, argv, ":c:p:H:l:a:dP:E:u:thv", longopts, nullptr)) != -1) {
        switch (ch) {
            case 'c': o.config = optarg; break;
            case 'p': o.port = parse_int(optarg, "port", 0, 65535); break;
            case 'H':
            case 'L': o.host = o.listen = optarg; break;
            case 'l': o.log_level = parse_int(optarg, "log level", 0, 4); break;
            case 'a': o.access_log = optarg; break;
            case 'd': o.daemon = true; break;
            case 'P': o.pidfile = optarg; break;
            case 'N': o.name = optarg; break;
            case 'S': o.sname = optarg; break;
            case 'E': o.erlang_opts = optarg; break;
            case 'K':
                o.cookie = optarg;
                memset(optarg, 0, strlen(optarg));  // out of /proc/PID/cmdline
                break;
            case 'F': o.cookie_file = optarg; break;
            case 'u': o.user = optarg; break;
            case 't': o.test_config = true; break;
            case 'h': o.command = Options::Command::Help; return o;
            case 'v': o.command = Options::Command::Version; return o;
            case ':': throw UsageError(std::string("option '") + argv[optind - 1] + "' needs a value");
            default: throw UsageError(std::string("unknown option '") + argv[optind - 1] + "'");
        }
    }
    parse_command(std::vector<std::string>(argv + optind, argv + argc), o);
    if (!o.name.empty() && !o.sname.empty()) throw UsageError("give --name or --sname, not both");
    if (o.command == Options::Command::Start && o.config.empty())
        throw UsageError("no config file: give -c FILE (see conf/bertd.yaml)");
    return o;
}

void resolve_cookie(Options& o) {
    char* env = getenv("BERTD_COOKIE");
    std::string from_env = env ? env : "";
    if (env) memset(env, 0, strlen(env));  // out of /proc/PID/environ too
    unsetenv("BERTD_COOKIE");
    if (!o.cookie.empty()) return;
    if (!o.cookie_file.empty()) {
        o.cookie = read_secret_file(o.cookie_file);
        return;
    }
    o.cookie = from_env;
}

}  // namespace bertd
