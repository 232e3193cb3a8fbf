// link_client.h: the acceptor's side of the Erlang link (src/erl/proto.h). A native
// request keeps its connection busy, with its bytes still in the connection's queue,
// until the link answers it or declines it (the router then says who serves it).
// While the link is down (the master restarts it at once) native requests wait for it,
// briefly. Connections the link hands over (rpc:call from Erlang nodes) are served like
// clients, on external modules only. Nothing here blocks, and a lost link fails every
// request it held at once.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_set>

#include "erl/proto.h"
#include "io/event.h"
#include "io/fd.h"
#include "log/throttle.h"

namespace bertd {

class Acceptor;
struct Request;

class LinkClient {
public:
    explicit LinkClient(Acceptor& a);
    ~LinkClient();

    bool configured() const;
    // Reaches the link if it is not connected (at start and on every tick), and gives up a
    // connection the link has not taken in time.
    void connect();
    // Sends a native request to the link, or parks it until the link is back.
    void send(Request& r);
    // Requests at the link or waiting for it.
    bool busy() const { return !at_link_.empty() || !parked_.empty(); }
    // The link is wanted and this acceptor has no welcomed connection to it (health: degraded).
    bool down() const { return configured() && !welcomed_; }

private:
    static void on_io(evutil_socket_t, short, void*);
    static void on_retry(evutil_socket_t, short, void*);
    bool try_connect();
    void io(short what);
    void read_messages();
    void message(const linkproto::Message& m);
    void adopt_connection();
    void lost(const std::string& why);
    void flush();
    void watch(bool writable);
    void write(Request& r);
    void retry_parked();

    Acceptor& acc_;
    Fd fd_;
    EventPtr ev_, retry_ev_;
    std::string in_, out_;
    size_t in_start_ = 0, out_start_ = 0;
    bool writing_ = false;
    std::deque<int> fds_;                  // descriptors received with Connection messages, in order
    std::unordered_set<uint64_t> at_link_;  // ids (and tags) of the requests the link holds
    std::deque<uint64_t> parked_;           // ids of the requests waiting for the link
    int64_t retry_at_us_ = 0;
    int64_t lost_at_us_ = 0;  // when lost() last ran
    // The listen socket is the master's, so a connect succeeds even while no link runs: the
    // connection counts only once the link welcomes it.
    bool welcomed_ = false;
    int64_t connected_at_us_ = 0;
    log::Throttle impostor_{10'000'000};
};

}  // namespace bertd
