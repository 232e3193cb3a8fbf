// streamer.cc: make bench's stream client and its baseline (tests/bench/rows.py), one JSON line out.
//   streamer in  --port P --bytes N [--chunk C]  streams N bytes to stream:sink/0 through bertd
//   streamer out --port P --bytes N [--chunk C]  reads stream:source/2's N-byte streamed answer
//   streamer cat --bytes N [--chunk C]           the same N bytes through `cat` between two socketpairs
//   streamer direct-in|direct-out --handler PATH --bytes N [--chunk C]
//                                                in or out straight to the handler on fds 3/4 (no bertd)
// Raw BERPs from one buffer, so the client costs a syscall per chunk and no copy. It connects to
// loopback only and never holds more than one chunk of the stream.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>

#include "bert/codec.h"
#include "bert/printer.h"
#include "bert/term.h"

namespace {

using bert::Term;

[[noreturn]] void die(const std::string& why) {
    std::fprintf(stderr, "streamer: %s\n", why.c_str());
    std::exit(1);
}

double now_s() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

void put_u32(char* p, uint32_t n) {
    p[0] = char(n >> 24), p[1] = char(n >> 16), p[2] = char(n >> 8), p[3] = char(n);
}

uint32_t get_u32(const char* p) {
    auto b = [p](int i) { return uint32_t(uint8_t(p[i])); };
    return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

std::string berp(const Term& t) {
    std::string body = bert::encode(t), out(4, '\0');
    put_u32(out.data(), uint32_t(body.size()));
    return out + body;
}

void write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) die(std::string("write: ") + std::strerror(errno));
        p += w, n -= size_t(w);
    }
}

// Writes a chunk header and the chunk in one writev, whatever part the socket takes each time.
void write_chunk(int fd, const char* buf, size_t n) {
    char hdr[4];
    put_u32(hdr, uint32_t(n));
    iovec iov[2] = {{hdr, 4}, {const_cast<char*>(buf), n}};
    size_t left = 4 + n;
    int i = 0;
    while (left > 0) {
        ssize_t w = ::writev(fd, iov + i, 2 - i);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) die(std::string("writev: ") + std::strerror(errno));
        left -= size_t(w);
        for (size_t k = size_t(w); k > 0;) {
            size_t take = std::min(k, iov[i].iov_len);
            iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + take;
            iov[i].iov_len -= take;
            k -= take;
            if (iov[i].iov_len == 0) i++;
        }
    }
}

// Buffered reads of frames and chunk headers from a socket.
class Reader {
public:
    explicit Reader(int fd) : fd_(fd), buf_(4u << 20, '\0') {}
    void fill(size_t n) {
        if (end_ - pos_ >= n) return;
        std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
        end_ -= pos_, pos_ = 0;
        if (buf_.size() < n) buf_.resize(n);
        while (end_ < n) {
            ssize_t r = ::recv(fd_, buf_.data() + end_, buf_.size() - end_, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) die(r == 0 ? "the server closed the connection" : std::strerror(errno));
            end_ += size_t(r);
        }
    }
    uint32_t u32() {
        fill(4);
        pos_ += 4;
        return get_u32(buf_.data() + pos_ - 4);
    }
    Term frame() {
        uint32_t n = u32();
        fill(n);
        Term t;
        if (bert::DecodeError e = bert::decode(std::string_view(buf_.data() + pos_, n), t); e) die(e.message);
        pos_ += n;
        return t;
    }
    // Skips n bytes, reading the socket in big reads without keeping them.
    void skip(uint64_t n) {
        while (n > 0) {
            if (pos_ == end_) {
                pos_ = end_ = 0;
                ssize_t r = ::recv(fd_, buf_.data(), buf_.size(), 0);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0)
                    die(r == 0 ? "the server closed the connection in a chunk" : std::strerror(errno));
                end_ = size_t(r);
            }
            size_t take = size_t(std::min<uint64_t>(n, end_ - pos_));
            pos_ += take, n -= take;
        }
    }

private:
    int fd_;
    std::string buf_;
    size_t pos_ = 0, end_ = 0;
};

int connect_loopback(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        die(std::string("connect: ") + std::strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

Term atom(const char* a) { return Term::atom(a); }
Term info(const char* command, std::vector<Term> options) {
    return Term::tuple({atom("info"), atom(command), Term::list(std::move(options))});
}
Term call(const char* fn, std::vector<Term> args) {
    return Term::tuple({atom("call"), atom("stream"), atom(fn), Term::list(std::move(args))});
}

void report(const char* mode, uint64_t bytes, double secs) {
    std::printf("{\"mode\": \"%s\", \"bytes\": %llu, \"seconds\": %.6f, \"mib_per_s\": %.1f}\n", mode,
                (unsigned long long)bytes, secs, double(bytes) / double(1 << 20) / secs);
}

// The handler at `path` as a worker: one end of a socketpair as its fds 3 and 4, the other returned.
int spawn_handler(const char* path, pid_t& pid) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair failed");
    pid = fork();
    if (pid == 0) {
        int end = fcntl(sv[1], F_DUPFD, 10);  // not 3 or 4 itself, whose close-on-exec dup2 would keep
        dup2(end, 3);
        dup2(end, 4);
        close(end);
        execl(path, path, static_cast<char*>(nullptr));
        _exit(127);
    }
    close(sv[1]);
    return sv[0];
}

void end_handler(int fd, pid_t pid) {
    close(fd);
    int status = 0;
    waitpid(pid, &status, 0);
}

void stream_in(int fd, uint64_t bytes, size_t chunk, const char* mode) {
    std::string block(chunk, 'x'), head = berp(info("stream", {})) + berp(call("sink", {}));
    double t0 = now_s();
    write_all(fd, head.data(), head.size());
    for (uint64_t left = bytes; left > 0; left -= std::min<uint64_t>(left, chunk))
        write_chunk(fd, block.data(), size_t(std::min<uint64_t>(left, chunk)));
    write_all(fd, "\0\0\0\0", 4);
    Reader r(fd);
    Term t = r.frame();
    double took = now_s() - t0;
    bool ok = t.is_tuple(2) && t[0].is_atom("reply") && t[1].is_list() && t[1].size() == 2 &&
              uint64_t(t[1][1].as_int()) == bytes;
    if (!ok) die("stream:sink answered " + bert::to_string(t, 300));
    report(mode, bytes, took);
}

void stream_out(int fd, uint64_t bytes, size_t chunk, const char* mode) {
    std::string head = berp(info("accept", {atom("stream")})) +
                       berp(call("source", {Term(int64_t(bytes)), Term(int64_t(chunk))}));
    double t0 = now_s();
    write_all(fd, head.data(), head.size());
    Reader r(fd);
    Term first = r.frame();
    if (!(first.is_tuple(3) && first[1].is_atom("stream")))
        die("not a streamed answer: " + bert::to_string(first, 300));
    Term reply = r.frame();
    if (!(reply.is_tuple(2) && reply[0].is_atom("reply")))
        die("stream:source answered " + bert::to_string(reply, 300));
    uint64_t got = 0;
    for (uint32_t n; (n = r.u32()) != 0;) {
        r.skip(n);
        got += n;
    }
    double took = now_s() - t0;
    if (got != bytes) die("got " + std::to_string(got) + " of " + std::to_string(bytes) + " bytes");
    report(mode, bytes, took);
}

// The baseline: a producer thread writes the bytes into one socketpair, `cat` copies them to
// another, and this thread reads them there.
void through_cat(uint64_t bytes, size_t chunk) {
    int in[2], out[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) != 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, out) != 0)
        die("socketpair failed");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[1], 0);
        dup2(out[1], 1);
        execlp("cat", "cat", static_cast<char*>(nullptr));
        _exit(127);
    }
    close(in[1]);
    close(out[1]);
    double t0 = now_s();
    std::thread producer([&] {
        std::string block(chunk, 'x');
        for (uint64_t left = bytes; left > 0; left -= std::min<uint64_t>(left, chunk))
            write_all(in[0], block.data(), size_t(std::min<uint64_t>(left, chunk)));
        close(in[0]);
    });
    std::string buf(4u << 20, '\0');
    uint64_t got = 0;
    for (;;) {
        ssize_t r = ::recv(out[0], buf.data(), buf.size(), 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += uint64_t(r);
    }
    double took = now_s() - t0;
    producer.join();
    int status = 0;
    waitpid(pid, &status, 0);
    if (got != bytes) die("cat passed " + std::to_string(got) + " of " + std::to_string(bytes) + " bytes");
    report("cat", bytes, took);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2)
        die("usage: streamer in|out|cat|direct-in|direct-out [--port P] [--handler PATH] --bytes N [--chunk "
            "C]");
    std::string mode = argv[1];
    int port = 0;
    uint64_t bytes = 0;
    size_t chunk = 256u << 10;
    const char* handler = nullptr;
    for (int i = 2; i + 1 < argc; i += 2) {
        std::string_view a = argv[i];
        if (a == "--port")
            port = std::atoi(argv[i + 1]);
        else if (a == "--bytes")
            bytes = std::strtoull(argv[i + 1], nullptr, 10);
        else if (a == "--chunk")
            chunk = std::strtoull(argv[i + 1], nullptr, 10);
        else if (a == "--handler")
            handler = argv[i + 1];
        else
            die("unknown option " + std::string(a));
    }
    if (bytes == 0 || chunk == 0 || chunk > (32u << 20)) die("--bytes must be > 0, --chunk from 1 to 32 MiB");
    signal(SIGPIPE, SIG_IGN);
    pid_t pid = -1;
    int fd = -1;
    if (mode == "in" && port > 0)
        stream_in(fd = connect_loopback(port), bytes, chunk, "in");
    else if (mode == "out" && port > 0)
        stream_out(fd = connect_loopback(port), bytes, chunk, "out");
    else if (mode == "direct-in" && handler)
        stream_in(fd = spawn_handler(handler, pid), bytes, chunk, "direct-in");
    else if (mode == "direct-out" && handler)
        stream_out(fd = spawn_handler(handler, pid), bytes, chunk, "direct-out");
    else if (mode == "cat")
        through_cat(bytes, chunk);
    else
        die("usage: streamer in|out|cat|direct-in|direct-out [--port P] [--handler PATH] --bytes N [--chunk "
            "C]");
    if (pid > 0)
        end_handler(fd, pid);
    else if (fd >= 0)
        close(fd);
    return 0;
}
