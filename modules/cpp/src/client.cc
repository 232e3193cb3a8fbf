// client.cc: the synchronous BERT-RPC client (see bertd/client.h): connect, send infos and the
// request, read one answer within one deadline, interpret it. A connection that failed in any way,
// or that has bytes or an end-of-file waiting between requests, is closed and never reused.
// BERT-RPC 1.0: a streamed request's chunks follow the request; infos before the answer are read
// (cache, valid, stream) or skipped; a streamed answer's chunks go to the caller as they arrive.
#include "bertd/client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <utility>

#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/printer.h"

namespace bertd {

namespace rpc {

namespace {
std::string describe(const std::string& type, int64_t code, const std::string& error_class,
                     const std::string& detail) {
    std::string s = type + " error " + std::to_string(code) + ": ";
    if (!error_class.empty()) s += error_class + ": ";
    return s + detail;
}
}  // namespace

RemoteError::RemoteError(std::string type, int64_t code, std::string error_class, std::string detail,
                         std::vector<std::string> backtrace)
    : Error(describe(type, code, error_class, detail)),
      type_(std::move(type)),
      code_(code),
      class_(std::move(error_class)),
      detail_(std::move(detail)),
      backtrace_(std::move(backtrace)) {}

}  // namespace rpc

namespace {

using bert::Term;
using Clock = std::chrono::steady_clock;

// A point in time after which waiting is over; none when the timeout is 0.
struct Deadline {
    std::optional<Clock::time_point> at;

    static Deadline after(std::chrono::milliseconds d) {
        Deadline x;
        if (d.count() > 0) x.at = Clock::now() + d;
        return x;
    }
    // Milliseconds left for poll(): -1 for ever, 0 when passed.
    int poll_ms() const {
        if (!at) return -1;
        auto left = std::chrono::ceil<std::chrono::milliseconds>(*at - Clock::now()).count();
        if (left <= 0) return 0;
        return left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left);
    }
};

class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    ~Fd() { reset(); }
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_;
};

std::string seconds(std::chrono::milliseconds ms) {
    std::string s = std::to_string(ms.count() / 1000);
    if (ms.count() % 1000) {
        char frac[8];
        std::snprintf(frac, sizeof frac, ".%03d", static_cast<int>(ms.count() % 1000));
        s += frac;
        while (s.back() == '0') s.pop_back();
    }
    return s + "s";
}

class Peer {
public:
    Peer(const std::string& host, uint16_t port, const ClientOptions& o) : host_(host), port_(port), o_(o) {}

    [[noreturn]] void fail(const std::string& what) const {
        throw rpc::ConnectionError(where() + ": " + what);
    }
    [[noreturn]] void timed_out(const char* what, std::chrono::milliseconds limit) const {
        throw rpc::TimeoutError(where() + ": " + what + " within " + seconds(limit));
    }
    std::string where() const {
        return (host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_) + ":" +
               std::to_string(port_);
    }

    // Waits for `events` on fd; throws when the deadline passes first.
    void wait(int fd, short events, const Deadline& d, const char* what,
              std::chrono::milliseconds limit) const {
        for (;;) {
            pollfd p{fd, events, 0};
            int ms = d.poll_ms();
            if (ms == 0 && d.at) timed_out(what, limit);
            int r = ::poll(&p, 1, ms);
            if (r > 0) return;
            if (r == 0) timed_out(what, limit);
            if (errno != EINTR) fail(std::string("poll failed: ") + std::strerror(errno));
        }
    }

    Fd connect() const {
        auto limit = o_.connect_timeout.count() > 0 ? o_.connect_timeout : o_.timeout;
        Deadline d = Deadline::after(limit);
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        std::string service = std::to_string(port_);
        if (int rc = ::getaddrinfo(host_.c_str(), service.c_str(), &hints, &res); rc != 0)
            fail(std::string("cannot resolve host: ") + ::gai_strerror(rc));
        std::string last = "no address";
        Fd fd;
        for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
            Fd s(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
            if (s.get() < 0) {
                last = std::strerror(errno);
                continue;
            }
            int rc = ::connect(s.get(), ai->ai_addr, ai->ai_addrlen);
            if (rc != 0 && errno == EINPROGRESS) {
                pollfd p{s.get(), POLLOUT, 0};
                int ms = d.poll_ms();
                int pr;
                do pr = ::poll(&p, 1, ms);
                while (pr < 0 && errno == EINTR);
                if (pr == 0) {
                    ::freeaddrinfo(res);
                    timed_out("no connection", limit);
                }
                int err = 0;
                socklen_t len = sizeof err;
                ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
                rc = err == 0 ? 0 : -1;
                errno = err;
            }
            if (rc == 0) {
                fd = std::move(s);
                break;
            }
            last = std::strerror(errno);
        }
        ::freeaddrinfo(res);
        if (fd.get() < 0) fail("cannot connect: " + last);
        int one = 1;
        ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return fd;
    }

    void write_all(int fd, std::string_view data, const Deadline& d) const {
        while (!data.empty()) {
            ssize_t w = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
            if (w >= 0) {
                data.remove_prefix(static_cast<size_t>(w));
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                wait(fd, POLLOUT, d, "request not sent", o_.timeout);
            } else if (errno != EINTR) {
                fail(std::string("sending failed: ") + std::strerror(errno));
            }
        }
    }

    void read_exact(int fd, char* p, size_t n, const Deadline& d,
                    const char* closed = "connection closed before a whole answer") const {
        while (n > 0) {
            ssize_t r = ::recv(fd, p, n, 0);
            if (r > 0) {
                p += r;
                n -= static_cast<size_t>(r);
            } else if (r == 0) {
                fail(closed);
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                wait(fd, POLLIN, d, "no whole answer", o_.timeout);
            } else if (errno != EINTR) {
                fail(std::string("reading failed: ") + std::strerror(errno));
            }
        }
    }

    // One answer frame's BERT bytes.
    std::string read_answer(int fd, const Deadline& d) const {
        char header[bert::kFrameHeader];
        read_exact(fd, header, sizeof header, d);
        bert::FrameScan scan = bert::scan_frame(std::string_view(header, sizeof header), o_.max_answer);
        if (scan.state == bert::FrameScan::State::TooLarge)
            throw rpc::InvalidAnswer(where() + ": answer of " + std::to_string(scan.length) +
                                     " bytes exceeds the limit of " + std::to_string(o_.max_answer));
        std::string body(scan.length, '\0');
        read_exact(fd, body.data(), body.size(), d);
        return body;
    }

    // One chunk of a streamed answer into `buf` (false at the zero header), within its own timeout.
    bool read_chunk(int fd, std::string& buf) const {
        static constexpr const char* kCut =
            "the streamed answer was cut short: the server closed the connection";
        Deadline d = Deadline::after(o_.timeout);
        char header[bert::kFrameHeader];
        read_exact(fd, header, sizeof header, d, kCut);
        uint32_t n = bert::scan_frame(std::string_view(header, sizeof header), ~0u).length;
        if (n == 0) return false;
        if (n > o_.max_chunk)
            throw rpc::InvalidAnswer(where() + ": a streamed answer's chunk of " + std::to_string(n) +
                                     " bytes is over max_chunk (" + std::to_string(o_.max_chunk) + ")");
        buf.resize(n);
        read_exact(fd, buf.data(), n, d, kCut);
        return true;
    }

private:
    const std::string& host_;
    uint16_t port_;
    const ClientOptions& o_;
};

// Between requests a BERT-RPC server sends nothing: readable means closed (or out of step).
bool stale(int fd) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, 0);
    return r != 0;
}

// Error fields are binaries by the spec; atoms and byte lists are read as text too.
std::string text(const Term& t) {
    switch (t.kind()) {
        case Term::Kind::Binary: return t.bytes();
        case Term::Kind::Atom: return t.atom_name();
        case Term::Kind::List:
            if (t.is_proper_list()) {
                std::string s;
                for (const Term& c : t.items()) {
                    if (!c.is_int() || c.as_int() < 0 || c.as_int() > 255) return bert::to_string(t);
                    s.push_back(static_cast<char>(c.as_int()));
                }
                return s;
            }
            return bert::to_string(t);
        default: return bert::to_string(t);
    }
}

[[noreturn]] void throw_remote(const Term& detail, const std::string& where) {
    std::string type, error_class, message;
    int64_t code = 0;
    std::vector<std::string> trace;
    const bool five = detail.is_tuple(5), three = detail.is_tuple(3);
    if ((!five && !three) || !detail[0].is_atom() || !detail[1].is_int())
        throw rpc::InvalidAnswer(where + ": malformed error answer: " + bert::to_string(detail, 512));
    type = detail[0].atom_name();
    code = detail[1].as_int();
    if (five) {
        error_class = text(detail[2]);
        message = text(detail[3]);
        if (detail[4].is_proper_list())
            for (const Term& line : detail[4].items()) trace.push_back(text(line));
    } else {
        message = text(detail[2]);  // older servers: {Type, Code, Detail}
    }
    if (type == "protocol") throw rpc::ProtocolError(type, code, error_class, message, trace);
    if (type == "server") throw rpc::ServerError(type, code, error_class, message, trace);
    if (type == "user") throw rpc::UserError(type, code, error_class, message, trace);
    if (type == "proxy") throw rpc::ProxyError(type, code, error_class, message, trace);
    throw rpc::RemoteError(type, code, error_class, message, trace);
}

void append_info(std::string& out, std::string_view command, std::vector<Term> options) {
    std::string payload =
        bert::encode(Term::tuple({Term::atom("info"), Term::atom(command), Term::list(std::move(options))}));
    bert::append_frame(out, payload);
}

// The infos the BERT-RPC 1.0 options ask for.
void append_rpc10_infos(std::string& out, const RequestOptions& o, bool cast) {
    std::vector<Term> kinds;
    if (o.on_chunk) kinds.push_back(Term::atom("stream"));
    if (o.accept_cache) kinds.push_back(Term::atom("cache"));
    if (!kinds.empty()) append_info(out, "accept", std::move(kinds));
    if (o.validation)
        append_info(out, "cache", {Term::tuple({Term::atom("validation"), Term::binary(*o.validation)})});
    if (o.callback) {
        const Callback& c = *o.callback;
        if (!cast)
            throw std::invalid_argument(
                "a callback goes with a cast (the server answers {noreply} and casts the result)");
        if (c.service.find(':') == std::string::npos || c.module.empty() || c.function.empty())
            throw std::invalid_argument("a callback needs a service \"host:port\", a module and a function");
        append_info(out, "callback",
                    {Term::tuple({Term::atom("service"), Term::binary(c.service)}),
                     Term::tuple({Term::atom("mfa"), Term::atom(c.module), Term::atom(c.function),
                                  Term::list(c.args)})});
    }
    if (o.stream_in)
        bert::append_frame(
            out, bert::encode(Term::tuple({Term::atom("info"), Term::atom("stream"), Term::nil()})));
}

std::string request_payload(std::string_view kind, std::string_view module, std::string_view function,
                            std::vector<Term> args, bert::FloatForm floats) {
    std::vector<Term> items;
    items.reserve(4);
    items.push_back(Term::atom(kind));
    items.push_back(Term::atom(module));
    items.push_back(Term::atom(function));
    items.push_back(Term::list(std::move(args)));  // moved: arguments may be large
    return bert::encode(Term::tuple(std::move(items)), {floats});
}

}  // namespace

Client::Client(std::string host, uint16_t port, ClientOptions options)
    : host_(std::move(host)), port_(port), options_(options) {}

Client::~Client() { close(); }

Client::Client(Client&& o) noexcept
    : host_(std::move(o.host_)), port_(o.port_), options_(o.options_), fd_(std::exchange(o.fd_, -1)) {}

Client& Client::operator=(Client&& o) noexcept {
    if (this != &o) {
        close();
        host_ = std::move(o.host_);
        port_ = o.port_;
        options_ = o.options_;
        fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
}

void Client::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

Term Client::call(std::string_view module, std::string_view function, std::vector<Term> args,
                  const RequestOptions& options) {
    return std::move(
        *exchange(request_payload("call", module, function, std::move(args), options_.float_format), options,
                  Expect::Reply)
             .value);
}

void Client::cast(std::string_view module, std::string_view function, std::vector<Term> args,
                  const RequestOptions& options) {
    exchange(request_payload("cast", module, function, std::move(args), options_.float_format), options,
             Expect::NoReply);
}

Answer Client::request(std::string_view kind, std::string_view module, std::string_view function,
                       std::vector<Term> args, const RequestOptions& options) {
    if (kind != "call" && kind != "cast") throw std::invalid_argument("kind must be \"call\" or \"cast\"");
    // A call may be answered {noreply} after {info, valid, []}.
    Expect expect = kind == "cast" ? Expect::NoReply : options.validation ? Expect::Any : Expect::Reply;
    return exchange(request_payload(kind, module, function, std::move(args), options_.float_format), options,
                    expect);
}

std::optional<Term> Client::request_raw(std::string_view payload, const RequestOptions& options) {
    return exchange(payload, options, Expect::Any).value;
}

namespace {

// Sends a streamed request's chunks and its end. When the server stops reading (it answered
// early: a limit, a refused stream), its error answer is what the caller gets.
void send_stream(const Peer& peer, int fd, const RequestOptions& o, size_t chunk_size,
                 std::chrono::milliseconds timeout) {
    std::string buf;
    try {
        for (;;) {
            buf.assign(bert::kFrameHeader, '\0');
            buf.resize(bert::kFrameHeader + chunk_size);
            size_t n = o.stream_in(buf.data() + bert::kFrameHeader, chunk_size);
            if (n == 0) break;
            if (n > chunk_size)
                throw std::length_error("stream_in returned more bytes than it was given room for");
            bert::put_frame_header(buf.data(), static_cast<uint32_t>(n));
            peer.write_all(fd, std::string_view(buf.data(), bert::kFrameHeader + n),
                           Deadline::after(timeout));
        }
        peer.write_all(fd, std::string_view(rpc10::kStreamEnd, sizeof rpc10::kStreamEnd),
                       Deadline::after(timeout));
    } catch (const rpc::TimeoutError&) {
        throw;
    } catch (const rpc::ConnectionError& e) {
        std::string body;
        Term answer;
        try {
            body = peer.read_answer(fd, Deadline::after(std::chrono::seconds(2)));
        } catch (const rpc::Error&) {
            throw e;
        }
        if (!bert::decode(body, answer) && answer.is_tuple(2) && answer[0].is_atom("error"))
            throw_remote(answer[1], peer.where());
        throw;
    }
}

// Reads the infos before the answer into `a`; returns the answer's term.
Term read_head(const Peer& peer, int fd, const Deadline& d, size_t max_answer, Answer& a) {
    for (int k = 0; k < 64; ++k) {
        std::string body = peer.read_answer(fd, d);
        Term t;
        bert::Limits limits;  // the server's answers are taken as before these limits existed
        limits.max_size = max_answer;
        limits.max_inflated = max_answer;
        limits.max_expansion = SIZE_MAX;
        limits.memory_ratio = 0;
        if (bert::DecodeError err = bert::decode(body, t, limits))
            throw rpc::InvalidAnswer(peer.where() + ": undecodable answer: " + err.message);
        if (!(t.is_tuple(3) && t[0].is_atom("info"))) return t;
        if (t[1].is_atom("stream")) {
            a.streamed = true;
        } else if (t[1].is_atom("valid")) {
            a.valid = true;
        } else if (t[1].is_atom("cache")) {
            CacheInfo c;
            std::string why;
            if (!rpc10::read_cache_info(t[2], c, why))
                throw rpc::InvalidAnswer(peer.where() + ": malformed cache info from the server: " + why);
            a.cache = std::move(c);
        }  // other infos modify nothing this client knows: ignored, as the specification says
    }
    throw rpc::InvalidAnswer(peer.where() + ": the server sent 64 infos and no answer");
}

}  // namespace

Answer Client::exchange(std::string_view request, const RequestOptions& options, Expect expect) {
    std::string out;
    Priority priority = options.priority.value_or(options_.priority);
    if (priority != Priority::Default)
        append_info(out, "priority", {Term::atom(priority == Priority::Low ? "low" : "high")});
    for (const Info& info : options.infos) append_info(out, info.command, info.options);
    append_rpc10_infos(out, options, expect == Expect::NoReply);
    bert::append_frame(out, request);

    ClientOptions effective = options_;
    if (options.timeout) effective.timeout = *options.timeout;
    Peer peer(host_, port_, effective);
    Fd conn;
    if (fd_ >= 0) {
        conn = Fd(std::exchange(fd_, -1));
        // The server closed an idle connection; it never saw this request, so a new one is safe.
        if (stale(conn.get())) conn.reset();
    }
    if (conn.get() < 0) conn = peer.connect();

    // The deadline starts after the connect, which has its own.
    Deadline d = Deadline::after(effective.timeout);
    peer.write_all(conn.get(), out, d);
    if (options.stream_in) {
        send_stream(peer, conn.get(), options, options_.chunk_size, effective.timeout);
        d = Deadline::after(effective.timeout);
    }
    Answer a;
    Term answer = read_head(peer, conn.get(), d, options_.max_answer, a);
    if (a.streamed && !(answer.is_tuple(2) && answer[0].is_atom("reply")))
        throw rpc::InvalidAnswer(peer.where() + ": a streamed answer must start with {reply, Term}, not " +
                                 bert::to_string(answer, 512));
    if (a.streamed) {
        std::string chunk, gathered;
        while (peer.read_chunk(conn.get(), chunk)) {
            a.stream_bytes += chunk.size();
            if (options.on_chunk) {
                options.on_chunk(chunk);
            } else if (gathered.size() + chunk.size() > options_.max_answer) {
                throw rpc::InvalidAnswer(peer.where() + ": a streamed answer over max_answer");
            } else {
                gathered += chunk;  // a server that streams to a client that did not ask
            }
        }
        if (!options.on_chunk) answer = Term::tuple({Term::atom("reply"), Term::binary(std::move(gathered))});
    }
    // From here on the stream is in step: the connection may be kept whatever the answer says.
    if (options_.persistent) fd_ = conn.release();

    if (answer.is_tuple(2) && answer[0].is_atom("reply") && expect != Expect::NoReply) {
        a.value = std::move(answer.items()[1]);
        return a;
    }
    if (answer.is_tuple(1) && answer[0].is_atom("noreply") && expect != Expect::Reply) return a;
    if (answer.is_tuple(2) && answer[0].is_atom("error")) throw_remote(answer[1], peer.where());
    close();
    throw rpc::InvalidAnswer(peer.where() + ": not a BERT-RPC answer to a " +
                             (expect == Expect::NoReply ? "cast" : "call") + ": " +
                             bert::to_string(answer, 512));
}

}  // namespace bertd
