// config.cc: loading and validating bertd's configuration (YAML or Ernie .cfg).
// Every error names the file and line and says what to fix; unknown keys are
// errors, so a typo never silently falls back to a default.
#include "core/config.h"

#include <cctype>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "bert/parser.h"
#include "bert/printer.h"

namespace bertd {

const ModuleConfig* Config::find_module(const std::string& name) const {
    for (const auto& m : modules)
        if (m.name == name) return &m;
    return nullptr;
}

const ModuleConfig* Config::find_module(const std::string& name, ModuleConfig::Type type) const {
    for (const auto& m : modules)
        if (m.name == name && m.type == type) return &m;
    return nullptr;
}

bool Config::has_native() const {
    for (const auto& m : modules)
        if (m.type == ModuleConfig::Type::Native) return true;
    return false;
}

size_t parse_size(const std::string& text) {
    size_t i = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (i == 0) throw std::invalid_argument("expected a size such as 8MiB, 512KiB or 1048576");
    unsigned long long n = std::stoull(text.substr(0, i));
    std::string unit = text.substr(i);
    while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
    for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    unsigned long long mul = 1;
    if (unit.empty() || unit == "b") mul = 1;
    else if (unit == "k" || unit == "kb" || unit == "kib") mul = 1ull << 10;
    else if (unit == "m" || unit == "mb" || unit == "mib") mul = 1ull << 20;
    else if (unit == "g" || unit == "gb" || unit == "gib") mul = 1ull << 30;
    else throw std::invalid_argument("unknown size unit '" + text.substr(i) + "' (use KiB, MiB or GiB)");
    if (n > (~0ull) / mul) throw std::invalid_argument("size too large");
    return static_cast<size_t>(n * mul);
}

double parse_duration(const std::string& text) {
    size_t used = 0;
    double v;
    try {
        v = std::stod(text, &used);
    } catch (const std::exception&) {
        throw std::invalid_argument("expected a duration such as 30s, 500ms or 5m");
    }
    std::string unit = text.substr(used);
    while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
    double mul;
    if (unit.empty() || unit == "s") mul = 1;
    else if (unit == "ms") mul = 0.001;
    else if (unit == "m" || unit == "min") mul = 60;
    else if (unit == "h") mul = 3600;
    else throw std::invalid_argument("unknown duration unit '" + unit + "' (use ms, s, m or h)");
    if (!std::isfinite(v) || v < 0) throw std::invalid_argument("a duration must be a non-negative number");
    return v * mul;
}

namespace {

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ConfigError(path + ": cannot read the config file (does it exist, is it readable?)");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool valid_module_name(const std::string& name) {
    if (name.empty() || name.size() > 255) return false;
    for (unsigned char c : name)
        if (c < 32 || c == 127) return false;
    return true;
}

// Checks that apply to both formats, after a module is read.
void validate_module(const ModuleConfig& m) {
    auto fail = [&](const std::string& what) { throw ConfigError(m.where + ": module '" + m.name + "': " + what); };
    if (m.type == ModuleConfig::Type::External) {
        if (m.command.empty()) fail("an external module needs a command");
        if (m.count < 1 || m.count > 1024) fail("count must be between 1 and 1024");
    } else if (m.codepaths.empty() && m.node.empty()) {
        fail("a native module needs codepaths (Ernie form) or node");
    }
}

void validate(Config& c) {
    if (c.port < 0 || c.port > 65535) throw ConfigError(c.path + ": port must be between 0 and 65535");
    if (c.acceptors < 0 || c.acceptors > 256) throw ConfigError(c.path + ": acceptors must be between 1 and 256");
    if (c.log_level < 0 || c.log_level > 4) throw ConfigError(c.path + ": log_level must be between 0 and 4");
    if (c.limits.max_frame < 64) throw ConfigError(c.path + ": limits.max_frame must be at least 64 bytes");
    if (c.limits.max_frame > (uint32_t{1} << 31)) throw ConfigError(c.path + ": limits.max_frame must be at most 2GiB");
    if (c.limits.max_connections < 1) throw ConfigError(c.path + ": limits.max_connections must be at least 1");
    if (c.limits.max_queue < 1) throw ConfigError(c.path + ": limits.max_queue must be at least 1");
    if (c.limits.max_buffered != 0 && c.limits.max_buffered < 2 * c.limits.max_frame + 64)
        throw ConfigError(c.path + ": limits.max_buffered must hold two frames: at least twice limits.max_frame");
    if (c.limits.proxy_header_timeout <= 0)
        throw ConfigError(c.path + ": limits.proxy_header_timeout must be more than 0");
    validate_listen(c);
    std::set<std::pair<std::string, int>> seen;
    for (const auto& m : c.modules) {
        validate_module(m);
        if (m.name == "__admin__") throw ConfigError(m.where + ": the module name '__admin__' is reserved");
        // A native and an external module may share a name (shadowing); two of one kind may not.
        if (!seen.insert({m.name, int(m.type)}).second)
            throw ConfigError(m.where + ": module '" + m.name + "' is defined twice");
    }
    const ErlangConfig& e = c.erlang;
    if (!e.name.empty() && !e.sname.empty()) throw ConfigError(c.path + ": erlang: give name or sname, not both");
    std::set<std::string> names;
    for (const auto& r : e.registered) {
        auto fail = [&](const std::string& what) { throw ConfigError(r.where + ": registered name '" + r.name + "': " + what); };
        if (!valid_module_name(r.name)) fail("a registered name must be a non-empty atom of at most 255 characters");
        if (r.name == "rex" || r.name == "net_kernel")
            fail("'rex' and 'net_kernel' are bertd's own (rpc:call and net_adm:ping)");
        if (!names.insert(r.name).second) fail("defined twice");
        if (r.module.empty() || r.function.empty()) fail("needs a module and a function");
        if (!c.find_module(r.module, ModuleConfig::Type::External))
            fail("module '" + r.module + "' is not an external module of this config");
    }
}

// ---- YAML --------------------------------------------------------------------

struct Yaml {
    const std::string& path;

    std::string at(const YAML::Node& n) const {
        return path + ":" + std::to_string(n.Mark().line + 1);
    }
    [[noreturn]] void fail(const YAML::Node& n, const std::string& what) const {
        throw ConfigError(at(n) + ": " + what);
    }
    std::string str(const YAML::Node& n, const std::string& key) const {
        if (!n.IsScalar()) fail(n, key + " must be a single value");
        return n.Scalar();
    }
    long integer(const YAML::Node& n, const std::string& key, long lo, long hi) const {
        std::string s = str(n, key);
        size_t used = 0;
        long v = 0;
        try {
            v = std::stol(s, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used == 0 || used != s.size()) fail(n, key + " must be a whole number, not '" + s + "'");
        if (v < lo || v > hi)
            fail(n, key + " must be between " + std::to_string(lo) + " and " + std::to_string(hi));
        return v;
    }
    size_t size(const YAML::Node& n, const std::string& key) const {
        try {
            return parse_size(str(n, key));
        } catch (const std::invalid_argument& e) {
            fail(n, key + ": " + e.what());
        } catch (const std::out_of_range&) {
            fail(n, key + ": size too large");
        }
    }
    double duration(const YAML::Node& n, const std::string& key) const {
        try {
            return parse_duration(str(n, key));
        } catch (const std::invalid_argument& e) {
            fail(n, key + ": " + e.what());
        }
    }
    std::vector<std::string> strings(const YAML::Node& n, const std::string& key) const {
        std::vector<std::string> out;
        if (n.IsScalar()) return {n.Scalar()};
        if (!n.IsSequence()) fail(n, key + " must be a list");
        for (const auto& e : n) out.push_back(str(e, key));
        return out;
    }
};

ModuleConfig yaml_module(const Yaml& y, const YAML::Node& n) {
    if (!n.IsMap()) y.fail(n, "each entry of modules must be a mapping with name, type, command, count");
    ModuleConfig m;
    m.where = y.at(n);
    bool typed = false;
    for (const auto& kv : n) {
        std::string key = kv.first.as<std::string>();
        const YAML::Node& v = kv.second;
        if (key == "name") m.name = y.str(v, key);
        else if (key == "type") {
            std::string t = y.str(v, key);
            if (t == "external") m.type = ModuleConfig::Type::External;
            else if (t == "native") m.type = ModuleConfig::Type::Native;
            else y.fail(v, "type must be external or native, not '" + t + "'");
            typed = true;
        } else if (key == "command") m.command = y.str(v, key);
        else if (key == "count") m.count = int(y.integer(v, key, 1, 1024));
        else if (key == "timeout") m.timeout = y.duration(v, key);
        else if (key == "codepaths") m.codepaths = y.strings(v, key);
        else if (key == "node") m.node = y.str(v, key);
        else if (key == "cache") {
            if (!v.IsMap()) y.fail(v, "cache must be a mapping: {size: 64MiB}");
            for (const auto& ck : v) {
                std::string k = ck.first.as<std::string>();
                if (k == "size") m.cache_size = y.size(ck.second, k);
                else y.fail(ck.first, "unknown cache key '" + k + "' (known: size)");
            }
        } else if (key == "float_format") {
            std::string f = y.str(v, key);
            if (f != "new" && f != "ernie") y.fail(v, "float_format must be new or ernie, not '" + f + "'");
            m.ernie_floats = f == "ernie";
        } else if (key == "user")
            m.user = y.str(v, key);
        else if (key == "group")
            m.group = y.str(v, key);
        else
            y.fail(kv.first, "unknown module key '" + key +
                                 "' (known: name, type, command, count, timeout, codepaths, node, user, group, cache, "
                                 "float_format)");
    }
    if (!valid_module_name(m.name)) y.fail(n, "a module needs a name (a non-empty atom of at most 255 characters)");
    if (!typed && (!m.codepaths.empty() || !m.node.empty())) m.type = ModuleConfig::Type::Native;
    return m;
}

bool yaml_bool(const Yaml& y, const YAML::Node& n, const std::string& key) {
    std::string v = y.str(n, key);
    if (v == "true" || v == "yes" || v == "on") return true;
    if (v == "false" || v == "no" || v == "off") return false;
    y.fail(n, key + " must be true or false, not '" + v + "'");
}

void yaml_erlang(const Yaml& y, const YAML::Node& n, ErlangConfig& e) {
    e.present = true;
    if (n.IsNull()) return;
    if (!n.IsMap()) y.fail(n, "erlang must be a mapping (name, cookie, registered, ...)");
    for (const auto& kv : n) {
        std::string key = kv.first.as<std::string>();
        const YAML::Node& v = kv.second;
        if (key == "name") e.name = y.str(v, key);
        else if (key == "sname") e.sname = y.str(v, key);
        else if (key == "cookie") e.cookie = y.str(v, key);
        else if (key == "cookie_file")
            e.cookie_file = y.str(v, key);
        else if (key == "link_name") e.link_name = y.str(v, key);
        else if (key == "trust_clients") e.trust_clients = yaml_bool(y, v, key);
        else if (key == "call_timeout") e.call_timeout = y.duration(v, key);
        else if (key == "vm_options") e.vm_options = y.str(v, key);
        else if (key == "ebin") e.ebin = y.str(v, key);
        else if (key == "max_queue") e.max_queue = size_t(y.integer(v, key, 1, 10000000));
        else if (key == "registered") {
            if (!v.IsSequence()) y.fail(v, "registered must be a list of {name, module, function}");
            for (const auto& r : v) {
                if (!r.IsMap()) y.fail(r, "each registered entry needs name, module and function");
                RegisteredName rn;
                rn.where = y.at(r);
                for (const auto& rk : r) {
                    std::string k = rk.first.as<std::string>();
                    if (k == "name") rn.name = y.str(rk.second, k);
                    else if (k == "module") rn.module = y.str(rk.second, k);
                    else if (k == "function") rn.function = y.str(rk.second, k);
                    else y.fail(rk.first, "unknown key '" + k + "' (known: name, module, function)");
                }
                e.registered.push_back(rn);
            }
        } else {
            y.fail(kv.first,
                   "unknown erlang key '" + key +
                       "' (known: name, sname, cookie, cookie_file, link_name, trust_clients, call_timeout, "
                       "vm_options, ebin, registered, max_queue)");
        }
    }
    if (e.cookie_file.empty()) return;
    if (!e.cookie.empty()) y.fail(n, "erlang: give cookie or cookie_file, not both");
    try {
        e.cookie = read_secret_file(e.cookie_file);
    } catch (const ConfigError& err) {
        y.fail(n, err.what());
    }
}

void yaml_limits(Yaml& y, const YAML::Node& v, Limits& l) {
    if (!v.IsMap()) y.fail(v, "limits must be a mapping");
    for (const auto& lk : v) {
        std::string k = lk.first.as<std::string>();
        if (k == "max_frame") l.max_frame = y.size(lk.second, k);
        else if (k == "idle_timeout") l.idle_timeout = y.duration(lk.second, k);
        else if (k == "max_connections") l.max_connections = size_t(y.integer(lk.second, k, 1, 10000000));
        else if (k == "max_queue") l.max_queue = size_t(y.integer(lk.second, k, 1, 10000000));
        else if (k == "max_buffered") l.max_buffered = y.size(lk.second, k);
        else if (k == "max_stream") l.max_stream = y.size(lk.second, k);
        else if (k == "max_inflated") l.max_inflated = y.size(lk.second, k);
        else if (k == "proxy_header_timeout") l.proxy_header_timeout = y.duration(lk.second, k);
        else y.fail(lk.first, "unknown limit '" + k +
                                  "' (known: max_frame, idle_timeout, max_connections, max_queue, max_buffered, "
                                  "max_stream, max_inflated, proxy_header_timeout)");
    }
}

void yaml_callbacks(Yaml& y, const YAML::Node& v, CallbacksConfig& cb) {
    if (!v.IsMap()) y.fail(v, "callbacks must be a mapping: {allow: [\"host:port\", ...], timeout: 5s, retries: 3}");
    for (const auto& ck : v) {
        std::string k = ck.first.as<std::string>();
        if (k == "allow") cb.allow = y.strings(ck.second, k);
        else if (k == "timeout") cb.timeout = y.duration(ck.second, k);
        else if (k == "retries") cb.retries = int(y.integer(ck.second, k, 0, 100));
        else y.fail(ck.first, "unknown callbacks key '" + k + "' (known: allow, timeout, retries)");
    }
    for (const std::string& a : cb.allow)
        if (a.rfind(':') == std::string::npos || a.rfind(':') == 0 || a.back() == ':')
            y.fail(v, "callbacks.allow: '" + a + "' is not host:port (the port may be *)");
}

// The document's top mapping, or a ConfigError naming the file and line.
YAML::Node yaml_root(Yaml& y, const std::string& text) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        throw ConfigError(y.path + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
    }
    if (root.IsNull()) throw ConfigError(y.path + ": the config file is empty");
    if (!root.IsMap()) throw ConfigError(y.at(root) + ": the config must be a mapping of keys (listen, port, modules, ...)");
    return root;
}

void yaml_metrics(Yaml& y, const YAML::Node& v, Config& c) {
    if (!v.IsMap()) y.fail(v, "metrics must be a mapping: {listen: \"127.0.0.1:9464\"}");
    for (const auto& mk : v) {
        std::string k = mk.first.as<std::string>();
        if (k == "listen")
            c.metrics_listen = y.str(mk.second, k), c.metrics_where = y.at(mk.second);
        else
            y.fail(mk.first, "unknown metrics key '" + k + "' (known: listen)");
    }
}

Config parse_yaml(const std::string& text, const std::string& path) {
    Config c;
    c.path = path;
    Yaml y{path};
    for (const auto& kv : yaml_root(y, text)) {
        std::string key = kv.first.as<std::string>();
        const YAML::Node& v = kv.second;
        if (key == "listen" && v.IsScalar())
            c.listen = v.Scalar();
        else if (key == "listen")
            c.listeners = yaml_listen(v, path);
        else if (key == "port") c.port = int(y.integer(v, key, 0, 65535));
        else if (key == "acceptors") {
            if (v.IsScalar() && v.Scalar() == "auto") c.acceptors = 0;
            else c.acceptors = int(y.integer(v, key, 1, 256));
        } else if (key == "access_log") c.access_log = y.str(v, key);
        else if (key == "access_log_format") {
            std::string f = y.str(v, key);
            if (f != "ernie" && f != "extended")
                y.fail(v, "access_log_format must be ernie or extended, not '" + f + "'");
            c.access_log_extended = f == "extended";
        } else if (key == "proxy_protocol_from")
            c.proxy_protocol_from = y.strings(v, key);
        else if (key == "error_log") c.error_log = y.str(v, key);
        else if (key == "log_level") c.log_level = int(y.integer(v, key, 0, 4));
        else if (key == "pidfile") c.pidfile = y.str(v, key);
        else if (key == "user")
            c.user = y.str(v, key), c.user_where = y.at(v);
        else if (key == "group")
            c.group = y.str(v, key);
        else if (key == "admin_allow") c.admin_allow = y.strings(v, key);
        else if (key == "drain_timeout")
            c.drain_timeout = y.duration(v, key);
        else if (key == "metrics")
            yaml_metrics(y, v, c);
        else if (key == "limits")
            yaml_limits(y, v, c.limits);
        else if (key == "modules") {
            if (!v.IsSequence()) y.fail(v, "modules must be a list");
            for (const auto& m : v) c.modules.push_back(yaml_module(y, m));
        } else if (key == "erlang") {
            yaml_erlang(y, v, c.erlang);
        } else if (key == "callbacks") {
            yaml_callbacks(y, v, c.callbacks);
        } else {
            y.fail(kv.first,
                   "unknown key '" + key +
                       "' (known: listen, port, acceptors, access_log, access_log_format, error_log, "
                       "log_level, pidfile, user, group, admin_allow, proxy_protocol_from, drain_timeout, "
                       "limits, callbacks, metrics, modules, erlang)");
        }
    }
    validate(c);
    return c;
}

// ---- Ernie .cfg ----------------------------------------------------------------

struct Chunk {
    std::string_view text;
    size_t line;  // 1-based line where the chunk starts
};

// Splits a file of dotted terms at each end token ('.' followed by whitespace,
// '%' or the end), skipping strings, quoted atoms, char literals and comments.
std::vector<Chunk> split_dotted(std::string_view text) {
    std::vector<Chunk> out;
    size_t start = 0, line = 1, start_line = 1;
    bool in_chunk = false;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (!in_chunk && !std::isspace(static_cast<unsigned char>(c)) && c != '%') {
            in_chunk = true;
            start = i;
            start_line = line;
        }
        if (c == '\n') ++line;
        else if (c == '%') {
            while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
        } else if (c == '"' || c == '\'') {
            for (++i; i < text.size() && text[i] != c; ++i) {
                if (text[i] == '\\') ++i;
                else if (text[i] == '\n') ++line;
            }
        } else if (c == '$') {
            if (i + 1 < text.size() && text[i + 1] == '\\') ++i;
            ++i;
        } else if (c == '.' && in_chunk) {
            bool end = i + 1 == text.size() || std::isspace(static_cast<unsigned char>(text[i + 1])) || text[i + 1] == '%';
            if (end) {
                out.push_back({text.substr(start, i + 1 - start), start_line});
                in_chunk = false;
            }
        }
    }
    if (in_chunk) out.push_back({text.substr(start), start_line});
    return out;
}

ModuleConfig cfg_module(const bert::Term& t, const std::string& where) {
    auto fail = [&](const std::string& what) -> void { throw ConfigError(where + ": " + what); };
    if (!t.is_proper_list())
        fail("expected a list of options like [{module, ext}, {type, external}, {command, \"...\"}, {count, 2}]");
    ModuleConfig m;
    m.where = where;
    bool typed = false;
    for (const auto& opt : t.items()) {
        if (!opt.is_tuple(2) || !opt[0].is_atom()) fail("expected {Key, Value}, got " + bert::to_string(opt, 200));
        const std::string& key = opt[0].atom_name();
        const bert::Term& v = opt[1];
        auto text = [&](const bert::Term& s) {
            std::string out;
            if (s.is_binary()) return s.bytes();
            if (!s.is_proper_list()) fail(key + " must be a string, got " + bert::to_string(s, 200));
            for (const auto& ch : s.items()) {
                if (!ch.is_int() || ch.as_int() < 0 || ch.as_int() > 255)
                    fail(key + " must be a string, got " + bert::to_string(s, 200));
                out.push_back(static_cast<char>(ch.as_int()));
            }
            return out;
        };
        if (key == "module") {
            if (!v.is_atom()) fail("module must be an atom, got " + bert::to_string(v, 200));
            m.name = v.atom_name();
        } else if (key == "type") {
            if (v.is_atom("external")) m.type = ModuleConfig::Type::External;
            else if (v.is_atom("native")) m.type = ModuleConfig::Type::Native;
            else fail("type must be external or native, got " + bert::to_string(v, 200));
            typed = true;
        } else if (key == "command") m.command = text(v);
        else if (key == "count") {
            if (!v.is_int() || v.as_int() < 1 || v.as_int() > 1024) fail("count must be an integer from 1 to 1024");
            m.count = int(v.as_int());
        } else if (key == "timeout") {
            if (v.is_int() && v.as_int() >= 0) m.timeout = double(v.as_int()) / 1000.0;  // milliseconds, as Erlang does
            else fail("timeout must be a number of milliseconds");
        } else if (key == "codepaths") {
            if (!v.is_proper_list()) fail("codepaths must be a list of strings");
            for (const auto& p : v.items()) m.codepaths.push_back(text(p));
        } else if (key == "node") {
            m.node = v.is_atom() ? v.atom_name() : text(v);
        } else if (key == "float_format") {
            if (!v.is_atom("new") && !v.is_atom("ernie")) fail("float_format must be new or ernie, got " + bert::to_string(v, 200));
            m.ernie_floats = v.is_atom("ernie");
        } else {
            fail("unknown option '" + key + "' (known: module, type, command, count, timeout, codepaths, node, float_format)");
        }
    }
    if (m.name.empty()) fail("the term has no {module, Name}");
    if (!typed) fail("module '" + m.name + "' has no {type, external} or {type, native}");
    return m;
}

Config parse_cfg(const std::string& text, const std::string& path) {
    Config c;
    c.path = path;
    for (const auto& chunk : split_dotted(text)) {
        bert::Term t;
        if (auto err = bert::parse(chunk.text, t)) {
            size_t line = chunk.line + err.line - 1;
            throw ConfigError(path + ":" + std::to_string(line) + ": " + err.message);
        }
        if (chunk.text.back() != '.')
            throw ConfigError(path + ":" + std::to_string(chunk.line) + ": the term is not ended by a '.'");
        c.modules.push_back(cfg_module(t, path + ":" + std::to_string(chunk.line)));
    }
    if (c.modules.empty()) throw ConfigError(path + ": no modules defined (expected terms like [{module, ext}, ...].)");
    validate(c);
    return c;
}

bool looks_like_cfg(const std::string& text, const std::string& path) {
    if (path.size() >= 4 && path.compare(path.size() - 4, 4, ".cfg") == 0) return true;
    for (char ch : text) {
        if (std::isspace(static_cast<unsigned char>(ch))) continue;
        return ch == '[' || ch == '%';
    }
    return false;
}

}  // namespace

Config parse_config_text(const std::string& text, const std::string& path) {
    return looks_like_cfg(text, path) ? parse_cfg(text, path) : parse_yaml(text, path);
}

std::string read_secret_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw ConfigError(path + ": cannot read the cookie (does the file exist, is it readable?)");
    std::string line;
    std::getline(in, line);
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (line.empty()) throw ConfigError(path + ": the cookie file is empty");
    return line;
}

Config load_config(const std::string& path) { return parse_config_text(read_file(path), path); }

}  // namespace bertd
