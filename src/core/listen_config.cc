// listen_config.cc: reading and checking the `listen` entries (listen_config.h). An
// address is numeric (no name is looked up at start), an IPv6 one with a port is
// bracketed, and a unix socket's path is absolute.
#include "core/listen_config.h"

#include <arpa/inet.h>
#include <sys/un.h>

#include <set>
#include <stdexcept>

#include <yaml-cpp/yaml.h>

#include "core/config.h"
#include "io/address.h"

namespace bertd {

namespace {
bool numeric_host(const std::string& h) {
    unsigned char buf[16];
    return inet_pton(AF_INET, h.c_str(), buf) == 1 || inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

int port_number(const std::string& p, const std::string& text) {
    if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos)
        throw std::invalid_argument("'" + text + "': the port must be a number from 0 to 65535");
    int v = std::stoi(p);
    if (v > 65535) throw std::invalid_argument("'" + text + "': the port must be a number from 0 to 65535");
    return v;
}

std::string at(const YAML::Node& n, const std::string& path) {
    return path + ":" + std::to_string(n.Mark().line + 1);
}

[[noreturn]] void fail(const YAML::Node& n, const std::string& path, const std::string& what) {
    throw ConfigError(at(n, path) + ": " + what);
}

std::string scalar(const YAML::Node& n, const std::string& path, const std::string& key) {
    if (!n.IsScalar()) fail(n, path, "listen: " + key + " must be a single value");
    return n.Scalar();
}

ListenConfig yaml_entry(const YAML::Node& n, const std::string& path) {
    ListenConfig l;
    l.where = at(n, path);
    if (n.IsScalar()) {
        l.address = n.Scalar();
        return l;
    }
    if (!n.IsMap())
        fail(n, path,
             "each listen entry is an address (\"127.0.0.1:8000\") or a mapping {address: ..., ...}");
    for (const auto& kv : n) {
        std::string key = kv.first.as<std::string>();
        const YAML::Node& v = kv.second;
        if (key == "address") {
            l.address = scalar(v, path, key);
        } else if (key == "proxy_protocol") {
            std::string b = scalar(v, path, key);
            if (b == "true" || b == "yes" || b == "on")
                l.proxy_protocol = true;
            else if (b == "false" || b == "no" || b == "off")
                l.proxy_protocol = false;
            else
                fail(v, path, "listen: proxy_protocol must be true or false, not '" + b + "'");
        } else if (key == "mode") {
            std::string m = scalar(v, path, key);
            if (m.empty() || m.size() > 4 || m.find_first_not_of("01234567") != std::string::npos)
                fail(v, path, "listen: mode must be octal permission bits such as \"0660\", not '" + m + "'");
            l.mode = std::stoi(m, nullptr, 8);
        } else if (key == "owner") {
            l.owner = scalar(v, path, key);
        } else if (key == "group") {
            l.group = scalar(v, path, key);
        } else {
            fail(kv.first, path,
                 "unknown listen key '" + key + "' (known: address, proxy_protocol, mode, owner, group)");
        }
    }
    if (l.address.empty()) fail(n, path, "a listen entry needs an address");
    return l;
}
}  // namespace

std::string ListenAddress::text() const {
    if (unix_socket) return "unix:" + path;
    return host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port)
                                               : host + ":" + std::to_string(port);
}

ListenAddress parse_listen_address(const std::string& text, int default_port) {
    ListenAddress a;
    if (text.rfind("unix:", 0) == 0) {
        a.unix_socket = true;
        a.path = text.substr(5);
        if (a.path.empty() || a.path[0] != '/')
            throw std::invalid_argument("'" + text +
                                        "': a unix socket needs an absolute path (unix:/run/bertd.sock)");
        if (a.path.size() >= sizeof(sockaddr_un{}.sun_path))
            throw std::invalid_argument("'" + text + "': the path is too long for a unix socket");
        return a;
    }
    a.port = default_port;
    if (!text.empty() && text[0] == '[') {
        size_t close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
            throw std::invalid_argument("'" + text + "': write an IPv6 address with a port as [::1]:8000");
        a.host = text.substr(1, close - 1);
        a.port = port_number(text.substr(close + 2), text);
    } else if (size_t colon = text.find(':');
               colon != std::string::npos && text.find(':', colon + 1) == std::string::npos) {
        a.host = text.substr(0, colon);  // IPv4 with a port (an IPv6 address has several colons)
        a.port = port_number(text.substr(colon + 1), text);
    } else {
        a.host = text;
    }
    if (!numeric_host(a.host))
        throw std::invalid_argument("'" + text +
                                    "': not a numeric IPv4 or IPv6 address (names are not looked up)");
    return a;
}

std::vector<ListenConfig> listen_entries(const Config& c) {
    if (!c.listeners.empty()) return c.listeners;
    ListenConfig l;
    l.address = c.listen;
    l.where = c.path;
    return {l};
}

std::string listen_text(const Config& c) {
    std::string out;
    for (const ListenConfig& l : listen_entries(c)) {
        if (!out.empty()) out += ", ";
        try {
            out += parse_listen_address(l.address, c.port).text();
        } catch (const std::invalid_argument&) {
            out += l.address;
        }
        if (l.proxy_protocol) out += " (proxy_protocol)";
    }
    return out;
}

std::vector<ListenConfig> yaml_listen(const YAML::Node& n, const std::string& path) {
    std::vector<ListenConfig> out;
    if (!n.IsSequence()) return {yaml_entry(n, path)};
    for (const auto& e : n) out.push_back(yaml_entry(e, path));
    if (out.empty()) fail(n, path, "listen: the list is empty (give at least one address)");
    return out;
}

void validate_listen(const Config& c) {
    std::set<std::string> seen;
    for (const ListenConfig& l : listen_entries(c)) {
        ListenAddress a;
        try {
            a = parse_listen_address(l.address, c.port);
        } catch (const std::invalid_argument& e) {
            throw ConfigError(l.where + ": listen " + e.what());
        }
        if (!seen.insert(a.text()).second)
            throw ConfigError(l.where + ": listen: " + a.text() + " is given twice");
        if (!a.unix_socket && (l.mode >= 0 || !l.owner.empty() || !l.group.empty()))
            throw ConfigError(l.where + ": listen: mode, owner and group are for unix sockets only");
    }
    if (!c.metrics_listen.empty()) {
        try {
            ListenAddress m = parse_listen_address(c.metrics_listen, kMetricsPort);
            if (seen.count(m.text()))
                throw std::invalid_argument("'" + m.text() + "' is a BERT-RPC listener too");
        } catch (const std::invalid_argument& e) {
            throw ConfigError(c.metrics_where + ": metrics: listen " + e.what());
        }
    }
    for (const std::string& r : c.proxy_protocol_from)
        if (!parse_range(r))
            throw ConfigError(c.path + ": proxy_protocol_from: '" + r +
                              "' is not a numeric address or range (10.0.0.0/8, ::1)");
}

}  // namespace bertd
