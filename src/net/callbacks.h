// callbacks.h: BERT-RPC 1.0 callbacks. A cast sent after
// {info, callback, [{service, <<"host:port">>}, {mfa, M, F, A}]} runs as a call; once it
// is answered, bertd casts {cast, M, F, A ++ [Result]} to the service over an outbound
// connection of its own, with a timeout and retries with back-off, and ignores the
// answer. Only services the config allows are called back (no open relay). Names are
// resolved without blocking (libevent's evdns); nothing here blocks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/event.h"
#include "io/fd.h"
#include "log/throttle.h"

struct evdns_base;
struct evutil_addrinfo;

namespace bertd {

class Acceptor;
struct Callback;
struct Outcome;

// "host:port" against "host:port" patterns, where the port may be "*". Pure.
bool callback_allowed(std::string_view service, const std::vector<std::string>& allow);

// {cast, M, F, A ++ [Result]} as a whole frame, Result taken from `answer` (a whole frame):
// X of {reply, X}, else the whole answer term. Empty when `answer` is not a BERT term.
std::string callback_frame(const Callback& cb, std::string_view answer);

class Callbacks {
public:
    explicit Callbacks(Acceptor& a);
    ~Callbacks();

    // Empty when the config allows calling `service` back; else why not.
    std::string refusal(std::string_view service) const;
    // The callback's cast was answered: call its service back.
    void answered(const Callback& cb, const Outcome& answer);
    size_t in_flight() const { return calls_.size(); }  // counts finished ones not yet freed

private:
    struct Call;
    static void on_resolved(int err, evutil_addrinfo* res, void* arg);
    static void on_io(evutil_socket_t, short, void*);
    static void on_timer(evutil_socket_t, short, void*);
    static void on_reap(evutil_socket_t, short, void*);
    void start(Call& c);
    void resolved(Call& c, int err, evutil_addrinfo* res);
    void io(Call& c, short what);
    void attempt_failed(Call& c, const std::string& why);
    void done(Call& c, bool ok);

    Acceptor& acc_;
    evdns_base* dns_ = nullptr;
    std::vector<std::unique_ptr<Call>> calls_;
    EventPtr reap_;
    log::Throttle said_{10'000'000};
};

}  // namespace bertd
