// leases.h: an acceptor's requests on external workers: a slot leased from the
// shared segment (or a place in the module's high or low queue), the request written
// to the worker, its one answer read back, its deadline, and the slot given back or
// handed to the next waiter (whose acceptor is woken through its eventfd). A worker
// that dies, times out or answers out of step fails only the request it held, and
// the master replaces it on a fresh socketpair. Answers never cross: bytes a slot holds
// before its request is written, and bytes written by any process but the worker, are
// dropped with the worker, never delivered. Nothing here blocks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/event.h"

namespace bertd {

class Acceptor;
struct Request;

class Leases {
public:
    explicit Leases(Acceptor& a);
    ~Leases();

    // Leases a slot of the request's module and starts it there, or queues it; a full
    // queue completes it with an error.
    void start(Request& r);
    // Looks at every slot: hand-offs made to this acceptor, workers that died under a lease.
    void scan();
    size_t held() const;
    // Takes the fresh slot sockets the master sent on the control socket.
    void read_control();

private:
    struct Lease {
        Leases* owner = nullptr;
        uint32_t slot = 0;
        int fd = -1;
        EventPtr io, timer;
        Request* req = nullptr;  // set while this acceptor holds the slot
        bool writing = false;
        std::string answer;
    };
    static void on_io(evutil_socket_t, short, void*);
    static void on_timeout(evutil_socket_t, short, void*);

    Lease& lease_of(uint32_t slot);
    bool current(uint32_t slot);
    bool clean(Lease& l);
    bool from_worker(uint32_t slot, pid_t writer);
    void renewed(uint32_t slot, uint64_t epoch, int fd);
    void fault(uint32_t slot, const std::string& why);
    void begin(Request& r, uint32_t slot);
    void write_more(Lease& l);
    void read_answer(Lease& l);
    void finish(Lease& l);
    void fail(Lease& l, const std::string& why);
    void release(Lease& l);
    void give_back(uint32_t slot);
    void take_handoff(uint32_t slot);
    void retry_handoff(uint32_t dead_slot);

    Acceptor& acc_;
    std::vector<std::unique_ptr<Lease>> slots_;  // by slot index, made on first use
};

}  // namespace bertd
