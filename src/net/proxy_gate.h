// proxy_gate.h: where a connection accepted on a `proxy_protocol` listener waits for
// its PROXY header (net/proxy.h) before it becomes a client connection (conn.h) with the
// client's address the header names. The header must come whole, from an address in
// proxy_protocol_from, within limits.proxy_header_timeout; otherwise the connection is
// closed with a protocol error and a line in the error log. It never reads a byte past
// the header, and never waits on one connection: a hostile or slow one stalls nobody.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/address.h"
#include "io/event.h"
#include "io/fd.h"

namespace bertd {

class Acceptor;

class ProxyGate {
public:
    explicit ProxyGate(Acceptor& a);
    ~ProxyGate();
    ProxyGate(const ProxyGate&) = delete;
    ProxyGate& operator=(const ProxyGate&) = delete;

    // A connection just accepted on `listener` (its name, for messages; it outlives the gate).
    void admit(int fd, const sockaddr_storage& peer, const std::string& listener);
    size_t pending() const { return waiting_.size(); }

private:
    struct Waiting {
        ProxyGate* gate = nullptr;
        uint64_t key = 0;
        Fd fd;
        EventPtr ev;
        sockaddr_storage peer{};
        const std::string* listener = nullptr;
        std::string got;  // the header's bytes taken from the socket so far
        int64_t deadline_us = 0;
    };
    static void on_event(evutil_socket_t, short, void*);
    bool trusted(const sockaddr_storage& peer) const;
    void step(Waiting& w);
    void arm(Waiting& w);
    void pass(Waiting& w, const sockaddr_storage& client);
    void refuse(Waiting& w, const std::string& why);
    void forget(Waiting& w);  // w is gone after it
    void close_quietly(Waiting& w);
    bool say(uint64_t& suppressed);

    Acceptor& acc_;
    std::vector<AddressRange> from_;
    int64_t timeout_us_;
    uint64_t next_ = 1;
    std::unordered_map<uint64_t, std::unique_ptr<Waiting>> waiting_;
    // At most kBurst error-log lines per 10 s, so that a flood of bad connections cannot
    // flood the log; the next line says how many were left out.
    static constexpr int kBurst = 32;
    int64_t window_us_ = 0;
    int said_ = 0;
    uint64_t unsaid_ = 0;
};

}  // namespace bertd
