// callbacks.cc: checking a service against the allow-list, building the callback's
// cast, and delivering it: resolve, connect, write, read one answer, close.
#include "net/callbacks.h"

#include <errno.h>
#include <event2/dns.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>

#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/inflate.h"
#include "io/backoff.h"
#include "io/unix.h"
#include "log/log.h"
#include "net/acceptor.h"
#include "net/request.h"

namespace bertd {

namespace {
constexpr int64_t kRetryCapUs = 2'000'000;

// "host:port" or "[v6]:port" into its two parts.
bool split_service(std::string_view s, std::string& host, std::string& port) {
    size_t colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == s.size()) return false;
    std::string_view h = s.substr(0, colon);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    host.assign(h);
    port.assign(s.substr(colon + 1));
    return true;
}

// The Result the service gets, encoded without its version byte: X of {reply, X}, else
// the whole answer (an error). Empty when the answer is not a term. Its bytes are walked
// and copied, never decoded: a handler's answer may be large, or built to cost far more
// than its size.
std::string result_of(std::string_view payload) {
    std::string plain;
    if (bert::is_compressed(payload)) {
        if (bert::inflate_payload(payload, plain)) return {};
        payload = plain;
    }
    std::vector<bert::Span> reply;
    if (!bert::tuple_elements(payload, 1, reply) && reply.size() == 2 &&
        bert::is_atom_at(payload, reply[0], "reply"))
        return std::string(payload.substr(reply[1].at, reply[1].size()));
    if (bert::check(payload, {}, false)) return {};  // the service reads it; duplicate keys are its to refuse
    return std::string(payload.substr(1));
}
}  // namespace

bool callback_allowed(std::string_view service, const std::vector<std::string>& allow) {
    std::string host, port;
    if (!split_service(service, host, port)) return false;
    for (const std::string& pattern : allow) {
        std::string ph, pp;
        if (!split_service(pattern, ph, pp)) continue;
        if (ph == host && (pp == "*" || pp == port)) return true;
    }
    return false;
}

std::string callback_frame(const Callback& cb, std::string_view answer) {
    if (answer.size() <= bert::kFrameHeader) return {};
    std::string result = result_of(answer.substr(bert::kFrameHeader));
    if (result.empty()) return {};
    const bert::Term& args = cb.mfa[2];
    // {cast, M, F, [A1, ..., An, Result]}: the head as a term, then the list by hand.
    std::string body = bert::encode(bert::Term::tuple({bert::Term::atom("cast"), cb.mfa[0], cb.mfa[1]}));
    body[2] = 4;  // a 4-tuple: the list follows
    size_t n = args.is_nil() ? 0 : args.size();
    char head[5] = {108, 0, 0, 0, 0};
    uint32_t len = uint32_t(n + 1);
    for (int i = 0; i < 4; ++i) head[1 + i] = char(len >> (24 - 8 * i));
    body.append(head, sizeof head);
    for (size_t i = 0; i < n; ++i) body.append(bert::encode(args[i]).substr(1));
    body.append(result);
    body.push_back(char(106));  // the list's tail, []
    std::string frame;
    bert::append_frame(frame, body);
    return frame;
}

struct Callbacks::Call {
    Callbacks* owner = nullptr;
    std::string service, host, port, frame, what;
    int attempts = 0;
    Fd fd;
    EventPtr io, timer;
    bool connected = false;
    bool finished = false;
    std::string out, in;
    size_t out_at = 0;
    evdns_getaddrinfo_request* dns = nullptr;
};

Callbacks::Callbacks(Acceptor& a) : acc_(a) {
    // Finished calls are freed here, never under a callback of their own that may still run.
    reap_ = make_event(a.base(), -1, 0, on_reap, this);
}

void Callbacks::on_reap(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Callbacks*>(arg);
    std::erase_if(self->calls_, [](const std::unique_ptr<Call>& c) { return c->finished; });
    self->acc_.maybe_exit();
}

Callbacks::~Callbacks() {
    for (auto& c : calls_)
        if (c->dns) evdns_getaddrinfo_cancel(c->dns);
    calls_.clear();
    if (dns_) evdns_base_free(dns_, 0);
}

std::string Callbacks::refusal(std::string_view service) const {
    if (callback_allowed(service, acc_.rt().config.callbacks.allow)) return {};
    return "callback service '" + std::string(service) + "' is not allowed (callbacks.allow)";
}

void Callbacks::answered(const Callback& cb, const Outcome& answer) {
    auto c = std::make_unique<Call>();
    c->owner = this;
    c->service = cb.service;
    c->what = cb.mfa[0].atom_name() + ":" + cb.mfa[1].atom_name();
    c->frame = callback_frame(cb, answer.frame);
    bool ok = !c->frame.empty() && split_service(cb.service, c->host, c->port);
    Call& ref = *c;
    calls_.push_back(std::move(c));
    if (!ok) {
        done(ref, false);
        return;
    }
    if (!dns_) dns_ = evdns_base_new(acc_.base(), EVDNS_BASE_INITIALIZE_NAMESERVERS);
    ref.timer = make_event(acc_.base(), -1, 0, on_timer, &ref);
    start(ref);
}

void Callbacks::start(Call& c) {
    ++c.attempts;
    c.connected = false;
    c.fd.reset();
    c.io.reset();
    c.in.clear();
    evutil_addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    // It may call on_resolved at once (a numeric address, an error): that is handled there.
    c.dns = nullptr;
    evdns_getaddrinfo_request* req =
        evdns_getaddrinfo(dns_, c.host.c_str(), c.port.c_str(), &hints, on_resolved, &c);
    if (req && !c.connected && !c.fd && !c.finished) c.dns = req;
}

void Callbacks::on_resolved(int err, evutil_addrinfo* res, void* arg) {
    auto* c = static_cast<Call*>(arg);
    c->dns = nullptr;
    c->owner->resolved(*c, err, res);
    if (res) evutil_freeaddrinfo(res);
}

void Callbacks::resolved(Call& c, int err, evutil_addrinfo* res) {
    if (err == EVUTIL_EAI_CANCEL || c.finished) return;
    if (err || !res) {
        attempt_failed(c, std::string("cannot resolve ") + c.host + ": " + evutil_gai_strerror(err));
        return;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || (connect(fd, res->ai_addr, socklen_t(res->ai_addrlen)) != 0 && errno != EINPROGRESS)) {
        std::string why = strerror(errno);
        if (fd >= 0) ::close(fd);
        attempt_failed(c, "cannot connect: " + why);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c.fd.reset(fd);
    c.out = c.frame;
    c.out_at = 0;
    c.io = make_event(acc_.base(), fd, EV_WRITE | EV_READ | EV_PERSIST, on_io, &c);
    event_add(c.io.get(), nullptr);
    double t = acc_.rt().config.callbacks.timeout;
    timeval tv{time_t(t), suseconds_t((t - double(time_t(t))) * 1e6)};
    evtimer_add(c.timer.get(), &tv);
}

void Callbacks::on_io(evutil_socket_t, short what, void* arg) {
    auto* c = static_cast<Call*>(arg);
    c->owner->io(*c, what);
}

void Callbacks::io(Call& c, short what) {
    if (!c.connected) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            attempt_failed(c, std::string("cannot connect: ") + strerror(err));
            return;
        }
        c.connected = true;
    }
    if ((what & EV_WRITE) && c.out_at < c.out.size()) {
        switch (flush_some(c.fd.get(), c.out, c.out_at)) {
            case Flush::Failed: attempt_failed(c, std::string("cannot send: ") + strerror(errno)); return;
            case Flush::Blocked: return;
            case Flush::Done:
                // Written: from now on only the answer matters.
                c.out_at = 1;
                c.out = " ";
                event_del(c.io.get());
                event_assign(c.io.get(), acc_.base(), c.fd.get(), EV_READ | EV_PERSIST, on_io, &c);
                event_add(c.io.get(), nullptr);
                break;
        }
    }
    if (!(what & EV_READ)) return;
    char buf[4096];
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n > 0) c.in.append(buf, size_t(n));
    if (bert::scan_frame(c.in, 1u << 20).state != bert::FrameScan::State::NeedMore) {
        done(c, true);  // the service answered; what it said is ignored
        return;
    }
    if (n <= 0) attempt_failed(c, "it closed the connection without an answer");
}

void Callbacks::on_timer(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<Call*>(arg);
    if (c->fd || c->connected) {
        char secs[32];
        snprintf(secs, sizeof secs, "%g", c->owner->acc_.rt().config.callbacks.timeout);
        c->owner->attempt_failed(*c, std::string("no answer within ") + secs + " s");
    } else {
        c->owner->start(*c);  // the back-off before another attempt is over
    }
}

void Callbacks::attempt_failed(Call& c, const std::string& why) {
    c.io.reset();
    c.fd.reset();
    c.connected = false;
    evtimer_del(c.timer.get());
    if (c.attempts > acc_.rt().config.callbacks.retries) {
        uint64_t times;
        if (said_.due(times))
            log::warn("callback %s to %s failed after %d attempts: %s (%llu failed callbacks since the last line)",
                      c.what.c_str(), c.service.c_str(), c.attempts, why.c_str(), (unsigned long long)times);
        done(c, false);
        return;
    }
    int64_t delay = backoff_us(c.attempts + 1, kRetryCapUs);
    timeval tv{time_t(delay / 1'000'000), suseconds_t(delay % 1'000'000)};
    evtimer_add(c.timer.get(), &tv);
}

void Callbacks::done(Call& c, bool ok) {
    if (c.finished) return;
    GlobalStats& gs = acc_.seg().header().stats;
    (ok ? gs.callbacks_ok : gs.callbacks_failed).fetch_add(1, std::memory_order_relaxed);
    c.finished = true;
    c.io.reset();
    c.fd.reset();
    if (c.timer) evtimer_del(c.timer.get());
    event_active(reap_.get(), EV_TIMEOUT, 0);
}

}  // namespace bertd
