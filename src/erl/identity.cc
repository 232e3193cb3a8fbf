// identity.cc: choosing bertd's node names and cookie, and the companion VM's
// command line. Every refusal is a ConfigError that says what to change.
#include "erl/identity.h"

#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "core/cli.h"

namespace bertd::erl {

namespace {

std::string this_host(bool long_names) {
    char buf[256] = {0};
    if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return long_names ? "127.0.0.1" : "localhost";
    std::string h = buf;
    if (!long_names && h.find('.') != std::string::npos) h.resize(h.find('.'));
    return h;
}

bool valid_alive(const std::string& a) {
    if (a.empty() || a.size() > 200) return false;
    for (unsigned char c : a)
        if (!(isalnum(c) || c == '_' || c == '-')) return false;
    return true;
}

std::string home_dir() {
    if (const char* h = getenv("HOME"); h && *h) return h;
    if (passwd* pw = getpwuid(getuid()); pw && pw->pw_dir) return pw->pw_dir;
    return "/";
}

// Reads ~/.erlang.cookie, creating it (20 random capitals, mode 0400) when it does
// not exist, exactly as an Erlang node would on its first distributed start.
std::string cookie_file() {
    std::string path = home_dir() + "/.erlang.cookie";
    std::ifstream in(path);
    if (!in) {
        if (errno != ENOENT)
            throw ConfigError(path + ": cannot read the Erlang cookie: " + strerror(errno) +
                              " (fix its permissions, or give --cookie or erlang.cookie)");
        std::random_device rd;
        std::string c;
        for (int i = 0; i < 20; ++i) c.push_back(char('A' + rd() % 26));
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
        if (fd >= 0) {
            bool ok = ::write(fd, c.data(), c.size()) == ssize_t(c.size());
            ::close(fd);
            if (ok) return c;
        }
        in.open(path);  // somebody else created it meanwhile
        if (!in)
            throw ConfigError(path + ": cannot create the Erlang cookie: " + strerror(errno) +
                              " (give --cookie or erlang.cookie)");
    }
    std::string c;
    std::getline(in, c);
    while (!c.empty() && isspace(static_cast<unsigned char>(c.back()))) c.pop_back();
    if (c.empty()) throw ConfigError(path + ": the Erlang cookie file is empty");
    return c;
}

bool beam_in(const std::string& dir) {
    struct stat st;
    return !dir.empty() && stat((dir + "/bertd_native.beam").c_str(), &st) == 0;
}

// bertd_native.beam: erlang.ebin, else beside the program (build/rel/bertd ->
// build/rel/ebin), else the installed Erlang application directory (sbin/bertd ->
// lib/erlang/lib/bertd-VERSION/ebin).
std::string find_ebin(const Config& c) {
    if (!c.erlang.ebin.empty()) {
        if (!beam_in(c.erlang.ebin))
            throw ConfigError(c.path + ": erlang.ebin: no bertd_native.beam in " + c.erlang.ebin +
                              " (build it with make, or point ebin at build/ebin)");
        return c.erlang.ebin;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        std::string dir = exe;
        if (size_t slash = dir.rfind('/'); slash != std::string::npos) dir.resize(slash);
        const std::string installed = std::string("/../lib/erlang/lib/bertd-") + version() + "/ebin";
        for (const std::string& rel : {std::string("/ebin"), std::string("/../ebin"), installed}) {
            char real[PATH_MAX];
            std::string d = dir + rel;
            if (beam_in(d) && realpath(d.c_str(), real)) return real;
        }
    }
    throw ConfigError(
        c.path + ": cannot find bertd_native.beam beside the bertd program (run make, or set erlang.ebin)");
}

}  // namespace

bool needs_companion(const Config& config) {
    for (const auto& m : config.modules)
        if (m.type == ModuleConfig::Type::Native && m.node.empty() && !m.codepaths.empty()) return true;
    return false;
}

std::string module_node(const ModuleConfig& m, const Identity& id) {
    return m.node.empty() ? id.companion : m.node;
}

Identity resolve_identity(const Options& opts, const Config& config) {
    Identity id;
    const ErlangConfig& e = config.erlang;
    id.enabled = config.has_native() || e.present || !opts.name.empty() || !opts.sname.empty();
    if (!id.enabled) return id;

    std::string base;
    if (!opts.name.empty())
        base = opts.name, id.long_names = true;
    else if (!opts.sname.empty())
        base = opts.sname, id.long_names = false;
    else if (!e.name.empty())
        base = e.name, id.long_names = true;
    else if (!e.sname.empty())
        base = e.sname, id.long_names = false;
    else
        base = "bertd_" + std::to_string(config.port), id.long_names = false;

    std::string alive = base.substr(0, base.find('@'));
    id.host =
        base.find('@') == std::string::npos ? this_host(id.long_names) : base.substr(base.find('@') + 1);
    if (!valid_alive(alive) || id.host.empty())
        throw ConfigError("Erlang node name '" + base +
                          "': expected name@host with letters, digits, '_' or '-' before the '@'");
    if (!id.long_names && id.host.find('.') != std::string::npos)
        throw ConfigError("Erlang short node name '" + base +
                          "': a short name's host has no dots (use --name)");

    if (needs_companion(config)) {
        id.companion = alive + "@" + id.host;
        std::string ln = e.link_name.empty() ? alive + "_bertd" : e.link_name;
        id.cnode_alive = ln.substr(0, ln.find('@'));
        if (ln.find('@') != std::string::npos && ln.substr(ln.find('@') + 1) != id.host)
            throw ConfigError(config.path + ": erlang.link_name '" + ln + "' must be on host " + id.host);
    } else {
        id.cnode_alive = alive;
    }
    if (!valid_alive(id.cnode_alive))
        throw ConfigError(config.path + ": erlang.link_name: not a valid node name");
    id.cnode = id.cnode_alive + "@" + id.host;
    if (id.cnode == id.companion)
        throw ConfigError(config.path + ": erlang.link_name must differ from the companion VM's name " +
                          id.companion);

    if (!opts.cookie.empty())
        id.cookie = opts.cookie;
    else if (!e.cookie.empty())
        id.cookie = e.cookie;
    else
        id.cookie = cookie_file(), id.cookie_from_file = true;
    if (id.cookie.size() > 255) throw ConfigError("the Erlang cookie is longer than 255 characters");

    if (config.has_native())
        id.ebin = find_ebin(config);
    else if (beam_in(e.ebin))
        id.ebin = e.ebin;
    return id;
}

std::string shell_quote(const std::string& word) {
    std::string out = "'";
    for (char c : word) {
        if (c == '\'')
            out += "'\\''";
        else
            out += c;
    }
    return out + "'";
}

CompanionCommand companion_command(const Identity& id, const Config& config, const Options& opts) {
    CompanionCommand cc;
    std::ostringstream cmd;
    // -noshell -noinput: no console; the VM lives until bertd stops it.
    cmd << "exec erl -noshell -noinput " << (id.long_names ? "-name " : "-sname ")
        << shell_quote(id.companion);
    cmd << " -pa " << shell_quote(id.ebin);
    std::vector<std::string> seen;
    for (const auto& m : config.modules) {
        if (m.type != ModuleConfig::Type::Native || !m.node.empty()) continue;
        for (const auto& p : m.codepaths) {
            bool dup = false;
            for (const auto& s : seen) dup |= s == p;
            if (dup) continue;
            seen.push_back(p);
            cmd << " -pa " << shell_quote(p);
        }
    }
    // Options are shell words on purpose: -E "+S 2 -kernel inet_dist_listen_min 9100".
    if (!config.erlang.vm_options.empty()) cmd << " " << config.erlang.vm_options;
    if (!opts.erlang_opts.empty()) cmd << " " << opts.erlang_opts;
    if (!id.cookie_from_file) {
        cc.cookie = id.cookie;
        cmd << " -eval "
            << shell_quote(
                   "case os:getenv(\"BERTD_HOME\") of false -> os:unsetenv(\"HOME\"); "
                   "H -> os:putenv(\"HOME\", H) end, os:unsetenv(\"BERTD_HOME\").");
    }
    cc.command = cmd.str();
    return cc;
}

}  // namespace bertd::erl
