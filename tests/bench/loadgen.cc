// loadgen.cc: bertd's own BERT-RPC load generator: C connections in one epoll loop,
// one request in flight each, latency in a log-linear histogram, one JSON line out.
// It must never aim at anything but loopback, and never run past --duration.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

// Log-linear histogram over nanoseconds: exact below 128 ns, then 64 buckets per
// power of two (at most 1/64 = 1.6% relative error), like HdrHistogram with two
// significant binary digits more than needed for microsecond figures.
class Histogram {
public:
    static constexpr int kSub = 64;
    static constexpr int kBuckets = 2 * kSub + 57 * kSub;

    Histogram() : counts_(kBuckets, 0) {}

    void record(uint64_t ns) {
        counts_[index(ns)]++;
        total_++;
        sum_ += ns;
        max_ = std::max(max_, ns);
        min_ = std::min(min_, ns);
    }

    uint64_t total() const { return total_; }
    double mean() const { return total_ ? double(sum_) / double(total_) : 0; }
    uint64_t max() const { return total_ ? max_ : 0; }
    uint64_t min() const { return total_ ? min_ : 0; }

    // The highest value equivalent to the q-quantile's bucket (as HdrHistogram reports).
    uint64_t quantile(double q) const {
        if (total_ == 0) return 0;
        uint64_t rank = std::max<uint64_t>(1, uint64_t(std::ceil(q * double(total_))));
        uint64_t seen = 0;
        for (int i = 0; i < kBuckets; i++) {
            seen += counts_[i];
            if (seen >= rank) return std::min(upper(i), max_);
        }
        return max_;
    }

private:
    static int index(uint64_t v) {
        if (v < 2 * kSub) return int(v);
        int shift = (63 - std::countl_zero(v)) - 6;  // the top 7 bits select the bucket
        return 2 * kSub + (shift - 1) * kSub + int((v >> shift) - kSub);
    }
    static uint64_t upper(int i) {
        if (i < 2 * kSub) return uint64_t(i);
        int shift = (i - 2 * kSub) / kSub + 1;
        uint64_t mantissa = uint64_t((i - 2 * kSub) % kSub + kSub);
        return ((mantissa + 1) << shift) - 1;
    }

    std::vector<uint64_t> counts_;
    uint64_t total_ = 0, sum_ = 0, max_ = 0, min_ = UINT64_MAX;
};

// One kind of request: {call, Module, Function, [<<Payload>>]}, low priority when asked
// (an {info, priority, [low]} frame then goes before every request).
struct Target {
    std::string module, function;
    bool low = false;
    std::string name() const { return module + ":" + function + (low ? ":low" : ""); }
};

struct Options {
    std::string host = "127.0.0.1";
    int port = 0;
    int connections = 16;
    double duration = 5;
    double warmup = 0;
    bool connect_mode = false;
    long payload = -1;  // -1: the small default call, an argument of <<"hello">>
    std::string module = "echo", function = "echo";
    std::vector<Target> targets;  // empty: one, from --module and --function
    uint64_t max_requests = 0;    // 0: bounded by time only
    double timeout = 0;           // seconds without an answer before a request counts as hung; 0: never
    int log_failures = 20;        // failures described one by one in the output
    double series = 0;            // seconds per bucket of the answers-over-time series; 0: none
};

[[noreturn]] void usage(const char* why) {
    if (why) std::fprintf(stderr, "loadgen: %s\n", why);
    std::fprintf(stderr,
                 "usage: loadgen --port N [--host 127.0.0.1|::1] [--connections C] [--duration S]\n"
                 "               [--mode persistent|connect] [--payload BYTES] [--module M] [--function F]\n"
                 "               [--target M:F[:low]]... [--warmup S] [--max-requests N] [--timeout S]\n"
                 "               [--log-failures N] [--series S]\n"
                 "Sends {call, M, F, [<<Payload>>]} on C connections, one request in flight on each,\n"
                 "and prints one JSON line. Only loopback hosts are accepted (numeric: 127.0.0.0/8, ::1).\n"
                 "Latency: persistent mode from the request's first byte to the answer's last; connect\n"
                 "mode from connect() to the answer's last byte. Connect mode closes each connection\n"
                 "with SO_LINGER 0 (a reset), so no TIME_WAIT state can exhaust the ephemeral ports.\n"
                 "--target (repeatable) mixes requests: connection i sends target i mod T; ':low' sends\n"
                 "{info, priority, [low]} before each of its requests. A function named echo must give its\n"
                 "argument back. Failures are counted by kind (error answers by type; closed, reset,\n"
                 "connect, timeout, io), the first --log-failures of them described with the time they\n"
                 "happened (t, CLOCK_MONOTONIC seconds). --timeout fails a request with no answer after S\n"
                 "seconds. --series S adds the count of good answers per S seconds.\n");
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        std::string_view a = argv[i];
        if (a == "-h" || a == "--help") usage(nullptr);
        if (i + 1 >= argc) usage(("missing value for " + std::string(a)).c_str());
        const char* v = argv[++i];
        char* end = nullptr;
        auto number = [&](double lo, double hi) {
            double d = std::strtod(v, &end);
            if (end == v || *end != '\0' || !(d >= lo && d <= hi))
                usage(("bad value for " + std::string(a) + ": " + v).c_str());
            return d;
        };
        if (a == "--host") o.host = v;
        else if (a == "--port") o.port = int(number(1, 65535));
        else if (a == "--connections") o.connections = int(number(1, 50000));
        else if (a == "--duration") o.duration = number(0.001, 3600);
        else if (a == "--warmup") o.warmup = number(0, 600);
        else if (a == "--payload") o.payload = long(number(0, 64 << 20));
        else if (a == "--module") o.module = v;
        else if (a == "--function") o.function = v;
        else if (a == "--max-requests") o.max_requests = uint64_t(number(0, 1e15));
        else if (a == "--timeout") o.timeout = number(0, 3600);
        else if (a == "--log-failures") o.log_failures = int(number(0, 100000));
        else if (a == "--series") o.series = number(0.001, 3600);
        else if (a == "--target") {
            std::string_view t = v;
            Target tg;
            size_t c1 = t.find(':');
            if (c1 == std::string_view::npos) usage("--target is MODULE:FUNCTION[:low|:high]");
            tg.module = t.substr(0, c1);
            std::string_view rest = t.substr(c1 + 1);
            size_t c2 = rest.find(':');
            tg.function = rest.substr(0, c2);
            if (c2 != std::string_view::npos) {
                std::string_view prio = rest.substr(c2 + 1);
                if (prio == "low") tg.low = true;
                else if (prio != "high") usage("--target priority is low or high");
            }
            o.targets.push_back(tg);
        } else if (a == "--mode") {
            if (std::string_view(v) == "connect") o.connect_mode = true;
            else if (std::string_view(v) != "persistent") usage("--mode is persistent or connect");
        } else usage(("unknown option " + std::string(a)).c_str());
    }
    if (o.port == 0) usage("--port is required");
    if (o.targets.empty()) o.targets.push_back({o.module, o.function, false});
    for (const Target& t : o.targets)
        if (t.module.empty() || t.module.size() > 255 || t.function.empty() || t.function.size() > 255)
            usage("modules and functions are 1 to 255 bytes");
    return o;
}

// Resolves --host to a loopback socket address; anything else is refused.
bool loopback_address(const std::string& host, int port, sockaddr_storage& ss, socklen_t& len) {
    std::memset(&ss, 0, sizeof ss);
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127) return false;
        v4->sin_family = AF_INET;
        v4->sin_port = htons(uint16_t(port));
        len = sizeof *v4;
        return true;
    }
    if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) return false;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(uint16_t(port));
        len = sizeof *v6;
        return true;
    }
    return false;
}

void put_u32(std::string& s, uint32_t v) {
    char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
    s.append(b, 4);
}

void put_atom(std::string& t, std::string_view atom) {
    t += char(100);
    t += char(atom.size() >> 8);
    t += char(atom.size());
    t += atom;
}

std::string framed(const std::string& term) {
    std::string frame;
    put_u32(frame, uint32_t(term.size()));
    return frame + term;
}

// {call, M, F, [<<Arg>>]} framed, encoded as OTP 25's term_to_binary does (ATOM_EXT),
// after {info, priority, [low]} for a low target.
std::string request_frame(const Options& o, const Target& tg, std::string& arg_encoding) {
    std::string arg = o.payload < 0 ? std::string("hello") : std::string(size_t(o.payload), 'x');
    arg_encoding.assign(1, char(109));
    put_u32(arg_encoding, uint32_t(arg.size()));
    arg_encoding += arg;
    std::string t = {char(131), char(104), char(4)};
    put_atom(t, "call");
    put_atom(t, tg.module);
    put_atom(t, tg.function);
    t += {char(108), 0, 0, 0, 1};
    t += arg_encoding;
    t += char(106);
    if (!tg.low) return framed(t);
    std::string info = {char(131), char(104), char(3)};
    put_atom(info, "info");
    put_atom(info, "priority");
    info += {char(108), 0, 0, 0, 1};
    put_atom(info, "low");
    info += char(106);
    return framed(info) + framed(t);
}

// Is `p` the payload of {reply, ...}? Any of the four atom encodings is accepted.
// With `expect` non-empty the result must be exactly those bytes (the echoed argument).
bool is_reply(std::string_view p, std::string_view expect) {
    if (p.size() < 4 || uint8_t(p[0]) != 131 || uint8_t(p[1]) != 104 || uint8_t(p[2]) != 2) return false;
    size_t at = 3, n = 0;
    switch (uint8_t(p[at])) {
    case 100: case 118:
        if (p.size() < at + 3) return false;
        n = (size_t(uint8_t(p[at + 1])) << 8) | uint8_t(p[at + 2]);
        at += 3;
        break;
    case 115: case 119:
        if (p.size() < at + 2) return false;
        n = uint8_t(p[at + 1]);
        at += 2;
        break;
    default:
        return false;
    }
    if (n != 5 || p.size() < at + n || p.substr(at, n) != "reply") return false;
    return expect.empty() || p.substr(at + n) == expect;
}

// Writes a BERT term in Erlang syntax (binaries cut at 200 bytes), to say what an error
// answer said; false on bytes it cannot read.
bool render(std::string_view p, size_t& at, std::string& out, int depth) {
    if (at >= p.size() || depth > 64) return false;
    uint8_t tag = uint8_t(p[at++]);
    auto need = [&](uint64_t n) { return p.size() - at >= n; };
    auto be = [&](int n) {
        uint64_t v = 0;
        for (int i = 0; i < n; i++) v = (v << 8) | uint8_t(p[at + size_t(i)]);
        at += size_t(n);
        return v;
    };
    auto text = [&](uint64_t n, const char* open, const char* close) {
        out += open;
        for (char ch : p.substr(at, std::min<uint64_t>(n, 200)))
            out += (ch >= 32 && ch < 127 && ch != '"') ? ch : '.';
        if (n > 200) out += "...";
        out += close;
        at += size_t(n);
    };
    switch (tag) {
    case 97:
        if (!need(1)) return false;
        out += std::to_string(be(1));
        return true;
    case 98:
        if (!need(4)) return false;
        out += std::to_string(int32_t(uint32_t(be(4))));
        return true;
    case 70: {
        if (!need(8)) return false;
        uint64_t bits = be(8);
        double d;
        std::memcpy(&d, &bits, sizeof d);
        char b[32];
        std::snprintf(b, sizeof b, "%g", d);
        out += b;
        return true;
    }
    case 100: case 118: case 115: case 119: {
        int hn = (tag == 100 || tag == 118) ? 2 : 1;
        if (!need(size_t(hn))) return false;
        uint64_t n = be(hn);
        if (!need(n)) return false;
        out.append(p.substr(at, size_t(n)));
        at += size_t(n);
        return true;
    }
    case 107: {
        if (!need(2)) return false;
        uint64_t n = be(2);
        if (!need(n)) return false;
        text(n, "\"", "\"");
        return true;
    }
    case 109: {
        if (!need(4)) return false;
        uint64_t n = be(4);
        if (!need(n)) return false;
        text(n, "<<\"", "\">>");
        return true;
    }
    case 104: case 105: {
        int hn = tag == 104 ? 1 : 4;
        if (!need(size_t(hn))) return false;
        uint64_t n = be(hn);
        out += '{';
        for (uint64_t i = 0; i < n; i++) {
            if (i) out += ',';
            if (!render(p, at, out, depth + 1)) return false;
        }
        out += '}';
        return true;
    }
    case 106:
        out += "[]";
        return true;
    case 108: {
        if (!need(4)) return false;
        uint64_t n = be(4);
        out += '[';
        for (uint64_t i = 0; i < n; i++) {
            if (i) out += ',';
            if (!render(p, at, out, depth + 1)) return false;
        }
        if (at < p.size() && uint8_t(p[at]) == 106) {
            at++;
        } else {
            out += '|';
            if (!render(p, at, out, depth + 1)) return false;
        }
        out += ']';
        return true;
    }
    default:
        return false;
    }
}

std::string json_escape(std::string_view s) {
    std::string out;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (uint8_t(ch) < 32 || uint8_t(ch) >= 127) {
            out += '.';
        } else {
            out += ch;
        }
    }
    return out;
}

// How a request failed. Error answers by their type; the rest by what the socket did.
enum Kind { kServer, kProtocol, kUser, kProxy, kBadReply, kClosed, kReset, kConnect, kTimeout, kIo, kKinds };
constexpr const char* kKindNames[kKinds] = {"server", "protocol", "user",    "proxy",   "bad_reply",
                                            "closed", "reset",    "connect", "timeout", "io"};
bool is_answer(Kind k) { return k <= kBadReply; }

// Classifies an answer that is not the expected {reply, _}; `detail` says what it was.
Kind classify(std::string_view p, std::string& detail) {
    size_t at = 1;
    std::string text;
    bool readable = !p.empty() && uint8_t(p[0]) == 131 && render(p, at, text, 0) && at == p.size();
    if (!readable) {
        detail = "an unreadable answer of " + std::to_string(p.size()) + " bytes";
        return kBadReply;
    }
    detail = text.size() > 300 ? text.substr(0, 300) + "..." : text;
    constexpr std::pair<const char*, Kind> kTypes[] = {
        {"{error,{server,", kServer}, {"{error,{protocol,", kProtocol}, {"{error,{user,", kUser},
        {"{error,{proxy,", kProxy}};
    for (auto [prefix, kind] : kTypes)
        if (text.rfind(prefix, 0) == 0) return kind;
    return kBadReply;
}

struct Conn {
    int fd = -1;
    enum class State { Idle, Connecting, Writing, Reading } state = State::Idle;
    size_t target = 0;
    size_t written = 0;
    std::string in;
    uint64_t started = 0;    // when the request (or its connect) began
    uint64_t retry_at = 0;   // Idle after a failure: when to try again
    uint32_t events = 0;     // what the epoll set waits for on fd
};

struct TargetState {
    Target target;
    std::string frame, expect;  // expect: the echoed argument's encoding, for echo functions
    uint64_t answered = 0, failed = 0;
};

struct FailureRecord {
    uint64_t at_ns;
    size_t target;
    Kind kind;
    std::string detail;
};

class LoadGen {
public:
    LoadGen(const Options& o, const sockaddr_storage& addr, socklen_t addr_len)
        : o_(o), addr_(addr), addr_len_(addr_len), conns_(size_t(o.connections)) {
        for (const Target& t : o.targets) {
            TargetState ts;
            ts.target = t;
            ts.frame = request_frame(o, t, ts.expect);
            // Only echo functions give back their argument; others are checked for {reply, _} only.
            if (t.function != "echo") ts.expect.clear();
            targets_.push_back(std::move(ts));
        }
        for (size_t i = 0; i < conns_.size(); i++) conns_[i].target = i % targets_.size();
        Target plain = o.targets[0];
        plain.low = false;
        std::string unused;
        request_bytes_ = request_frame(o, plain, unused).size() - 4;
        ep_ = epoll_create1(EPOLL_CLOEXEC);
    }
    ~LoadGen() {
        for (auto& c : conns_)
            if (c.fd >= 0) close(c.fd);
        if (ep_ >= 0) close(ep_);
    }

    int run() {
        if (ep_ < 0) return perror("epoll_create1"), 1;
        start_ = now_ns();
        warm_end_ = start_ + uint64_t(o_.warmup * 1e9);
        end_ = warm_end_ + uint64_t(o_.duration * 1e9);
        const uint64_t timeout_ns = uint64_t(o_.timeout * 1e9);
        uint64_t next_scan = start_;
        for (auto& c : conns_) begin(c);
        std::vector<epoll_event> evs(256);
        uint64_t t = now_ns();
        while (t < end_ && !(o_.max_requests && hist_.total() >= o_.max_requests)) {
            int cap = waiting_ || timeout_ns ? 5 : 100;
            int timeout_ms = int(std::min<uint64_t>((end_ - t) / 1000000 + 1, uint64_t(cap)));
            int n = epoll_wait(ep_, evs.data(), int(evs.size()), timeout_ms);
            if (n < 0 && errno != EINTR) return perror("epoll_wait"), 1;
            for (int i = 0; i < n; i++) on_event(conns_[evs[i].data.u32], evs[i].events);
            t = now_ns();
            if (waiting_) retry_idle(t);
            if (timeout_ns && t >= next_scan) {
                t = now_ns();  // retries just begun started after the `t` above
                next_scan = t + 10'000'000;
                for (auto& c : conns_)
                    if (c.state != Conn::State::Idle && c.fd >= 0 && t > c.started + timeout_ns)
                        fail(c, kTimeout, "no answer within " + std::to_string(o_.timeout) + " s");
            }
        }
        stop_ = std::min(now_ns(), end_);
        print();
        return 0;
    }

private:
    void record(Conn& c, Kind k, std::string detail) {
        kinds_[k]++;
        targets_[c.target].failed++;
        if (failure_log_.size() < size_t(o_.log_failures))
            failure_log_.push_back({now_ns(), c.target, k, std::move(detail)});
    }

    void fail(Conn& c, Kind k, std::string detail) {
        record(c, k, std::move(detail));
        drop(c);
        // Back off a little, so a refused port is not hammered in a tight loop.
        c.state = Conn::State::Idle;
        c.retry_at = now_ns() + 10'000'000;
        waiting_++;
    }

    void fail_errno(Conn& c, int err) {
        Kind k = err == ECONNRESET || err == EPIPE ? kReset : err == ECONNREFUSED ? kConnect : kIo;
        if (c.state == Conn::State::Connecting) k = kConnect;
        fail(c, k, std::strerror(err));
    }

    void drop(Conn& c) {
        if (c.fd >= 0) close(c.fd);  // close() also removes it from the epoll set
        c.fd = -1;
        c.events = 0;
        c.in.clear();
    }

    void retry_idle(uint64_t t) {
        for (auto& c : conns_)
            if (c.state == Conn::State::Idle && c.retry_at <= t) {
                waiting_--;
                begin(c);
            }
    }

    bool open_socket(Conn& c) {
        c.fd = socket(addr_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) return false;
        int one = 1;
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (o_.connect_mode) {
            // Closing with a reset leaves no TIME_WAIT behind, so thousands of short
            // connections a second cannot exhaust the loopback ephemeral ports.
            linger l{1, 0};
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.u32 = uint32_t(&c - conns_.data());
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev) < 0) return false;
        c.events = EPOLLOUT;
        c.state = Conn::State::Connecting;
        int r = connect(c.fd, reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
        return r == 0 || errno == EINPROGRESS;
    }

    // Starts the next request on `c` (opening a connection when it has none).
    void begin(Conn& c) {
        c.started = now_ns();
        c.written = 0;
        c.in.clear();
        if (c.fd < 0) {
            if (!open_socket(c)) return fail(c, kConnect, std::strerror(errno));
            return;  // EPOLLOUT says when it is connected
        }
        c.state = Conn::State::Writing;
        write_some(c);
    }

    void write_some(Conn& c) {
        const std::string& frame = targets_[c.target].frame;
        while (c.written < frame.size()) {
            ssize_t w = send(c.fd, frame.data() + c.written, frame.size() - c.written, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) return want(c, EPOLLOUT);
                return fail_errno(c, errno);
            }
            c.written += size_t(w);
        }
        c.state = Conn::State::Reading;
        want(c, EPOLLIN);
    }

    void want(Conn& c, uint32_t events) {
        // Persistent connections stay on EPOLLIN between requests: no epoll_ctl per request.
        if (c.events == events) return;
        epoll_event ev{};
        ev.events = events;
        ev.data.u32 = uint32_t(&c - conns_.data());
        if (epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev) < 0) return fail_errno(c, errno);
        c.events = events;
    }

    void on_event(Conn& c, uint32_t events) {
        if (c.fd < 0) return;
        if (c.state == Conn::State::Connecting) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
            if (err || (events & (EPOLLERR | EPOLLHUP)))
                return fail(c, kConnect, std::strerror(err ? err : EIO));
            c.state = Conn::State::Writing;
            return write_some(c);
        }
        if (c.state == Conn::State::Writing) return write_some(c);
        if (c.state == Conn::State::Reading) read_some(c);
    }

    void read_some(Conn& c) {
        char buf[64 * 1024];
        for (;;) {
            ssize_t r = recv(c.fd, buf, sizeof buf, 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) return;
                return fail_errno(c, errno);
            }
            if (r == 0)
                return fail(c, kClosed,
                            "the server closed the connection after " + std::to_string(c.in.size()) +
                                " bytes of an answer");
            c.in.append(buf, size_t(r));
            if (c.in.size() < 4) continue;
            uint32_t len = (uint32_t(uint8_t(c.in[0])) << 24) | (uint32_t(uint8_t(c.in[1])) << 16) |
                           (uint32_t(uint8_t(c.in[2])) << 8) | uint8_t(c.in[3]);
            if (c.in.size() < 4 + size_t(len)) {
                c.in.reserve(4 + size_t(len));
                continue;
            }
            if (c.in.size() > 4 + size_t(len))
                return fail(c, kBadReply, "bytes after the answer that nobody asked for");
            return finish(c, std::string_view(c.in).substr(4));
        }
    }

    void finish(Conn& c, std::string_view answer) {
        uint64_t t = now_ns();
        TargetState& ts = targets_[c.target];
        bool ok = is_reply(answer, ts.expect);
        bool keep = ok;
        if (ok) {
            ts.answered++;
            if (t >= warm_end_ && t <= end_) {
                hist_.record(t - c.started);
                if (o_.series > 0) {
                    size_t i = size_t(double(t - warm_end_) / (o_.series * 1e9));
                    if (series_.size() <= i) series_.resize(i + 1, 0);
                    series_[i]++;
                }
            }
        } else {
            std::string detail;
            Kind k = classify(answer, detail);
            // A well-formed error answer leaves the stream in step; anything else does not.
            keep = k != kBadReply;
            record(c, k, std::move(detail));
        }
        if (o_.connect_mode || !keep) drop(c);
        begin(c);
    }

    const Options& o_;
    sockaddr_storage addr_;
    socklen_t addr_len_;
    std::vector<Conn> conns_;
    std::vector<TargetState> targets_;
    size_t request_bytes_ = 0;
    int ep_ = -1;
    uint64_t start_ = 0, warm_end_ = 0, end_ = 0, stop_ = 0;
    uint64_t kinds_[kKinds] = {};
    std::vector<FailureRecord> failure_log_;
    std::vector<uint64_t> series_;
    size_t waiting_ = 0;
    Histogram hist_;

    void print() {
        double secs = double(stop_ > warm_end_ ? stop_ - warm_end_ : 0) / 1e9;
        auto us = [](uint64_t ns) { return double(ns) / 1000.0; };
        uint64_t answers = 0, io = 0;
        for (int k = 0; k < kKinds; k++) (is_answer(Kind(k)) ? answers : io) += kinds_[k];
        // Requests still waiting when the run ended: a hung one shows as a large age.
        uint64_t t = now_ns(), in_flight = 0, oldest = 0;
        for (const auto& c : conns_)
            if (c.state != Conn::State::Idle && c.fd >= 0) {
                in_flight++;
                oldest = std::max(oldest, t - c.started);
            }
        std::string out;
        char buf[1024];
        std::snprintf(
            buf, sizeof buf,
            "{\"mode\":\"%s\",\"connections\":%d,\"request_bytes\":%zu,\"requests\":%llu,\"errors\":%llu,"
            "\"error_replies\":%llu,\"io_errors\":%llu,\"rps\":%.1f,\"duration_s\":%.3f,\"mean_us\":%.1f,"
            "\"min_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
            "\"max_us\":%.1f,"
            "\"start_mono\":%.6f,\"end_mono\":%.6f,\"in_flight_at_end\":%llu,\"oldest_in_flight_ms\":%.1f,",
            o_.connect_mode ? "connect" : "persistent", o_.connections, request_bytes_,
            (unsigned long long)hist_.total(), (unsigned long long)(answers + io),
            (unsigned long long)answers, (unsigned long long)io,
            secs > 0 ? double(hist_.total()) / secs : 0.0, secs, hist_.mean() / 1000.0,
            us(hist_.min()), us(hist_.quantile(0.5)), us(hist_.quantile(0.9)), us(hist_.quantile(0.99)),
            us(hist_.quantile(0.999)), us(hist_.max()), double(warm_end_) / 1e9, double(stop_) / 1e9,
            (unsigned long long)in_flight, double(oldest) / 1e6);
        out += buf;
        out += "\"failures\":{";
        for (int k = 0; k < kKinds; k++) {
            std::snprintf(buf, sizeof buf, "%s\"%s\":%llu", k ? "," : "", kKindNames[k],
                          (unsigned long long)kinds_[k]);
            out += buf;
        }
        out += "},\"targets\":[";
        for (size_t i = 0; i < targets_.size(); i++) {
            std::snprintf(buf, sizeof buf, "%s{\"target\":\"%s\",\"answered\":%llu,\"failed\":%llu}",
                          i ? "," : "", json_escape(targets_[i].target.name()).c_str(),
                          (unsigned long long)targets_[i].answered, (unsigned long long)targets_[i].failed);
            out += buf;
        }
        out += "],\"failure_log\":[";
        for (size_t i = 0; i < failure_log_.size(); i++) {
            const FailureRecord& f = failure_log_[i];
            std::snprintf(buf, sizeof buf, "%s{\"t\":%.6f,\"target\":\"%s\",\"kind\":\"%s\",\"detail\":\"",
                          i ? "," : "", double(f.at_ns) / 1e9,
                          json_escape(targets_[f.target].target.name()).c_str(), kKindNames[f.kind]);
            out += buf;
            out += json_escape(f.detail);
            out += "\"}";
        }
        out += "]";
        if (o_.series > 0) {
            std::snprintf(buf, sizeof buf, ",\"series_s\":%g,\"series\":[", o_.series);
            out += buf;
            size_t buckets = size_t(std::ceil(secs / o_.series));
            series_.resize(std::max(buckets, series_.size()), 0);
            for (size_t i = 0; i < series_.size(); i++) out += (i ? "," : "") + std::to_string(series_[i]);
            out += "]";
        }
        out += "}\n";
        std::fwrite(out.data(), 1, out.size(), stdout);
        std::fflush(stdout);
    }
};

}  // namespace

int main(int argc, char** argv) {
    Options o = parse(argc, argv);
    sockaddr_storage addr;
    socklen_t len = 0;
    if (!loopback_address(o.host, o.port, addr, len)) {
        std::fprintf(stderr, "loadgen: refusing host '%s': only 127.0.0.0/8 and ::1 are allowed\n",
                     o.host.c_str());
        return 2;
    }
    // Each connection needs a descriptor; raise the soft limit as far as the hard one allows.
    rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    LoadGen g(o, addr, len);
    return g.run();
}
