// erlang.cc: erlang_rpc and erlang_send for C++ handlers, over bertd's Erlang link.
// A connection whose stream may be out of step (an error mid-request) is closed,
// never reused.
#include "bertd/erlang.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/printer.h"

namespace bertd {

namespace {
using bert::Term;

std::mutex g_mu;
int g_fd = -1;
pid_t g_pid = 0;

void drop() {
    if (g_fd >= 0) ::close(g_fd);
    g_fd = -1;
}

int connection() {
    if (g_fd >= 0 && g_pid == getpid()) return g_fd;
    if (g_fd >= 0 && g_pid != getpid()) g_fd = -1;  // a forked child's copy belongs to the parent's stream
    const char* addr = getenv("BERTD_ERLANG");
    if (!addr || !*addr)
        throw ErlangError("BERTD_ERLANG is not set: run this handler under bertd with Erlang enabled");
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::string name = addr;
    socklen_t len;
    if (name[0] == '@') {  // the abstract namespace
        size_t n = std::min(name.size() - 1, sizeof a.sun_path - 2);
        memcpy(a.sun_path + 1, name.data() + 1, n);
        len = socklen_t(offsetof(sockaddr_un, sun_path) + 1 + n);
    } else {
        size_t n = std::min(name.size(), sizeof a.sun_path - 1);
        memcpy(a.sun_path, name.data(), n);
        len = socklen_t(offsetof(sockaddr_un, sun_path) + n + 1);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), len) != 0) {
        std::string err = strerror(errno);
        if (fd >= 0) ::close(fd);
        throw ErlangError("cannot reach bertd's Erlang link: " + err);
    }
    g_fd = fd;
    g_pid = getpid();
    return fd;
}

void write_all(int fd, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
        ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw ErlangError(std::string("bertd's Erlang link: ") + strerror(errno));
        off += size_t(n);
    }
}

void read_all(int fd, char* buf, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t n = ::recv(fd, buf + off, len - off, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw ErlangError("bertd's Erlang link closed the connection");
        off += size_t(n);
    }
}

Term request(const Term& req) {
    std::lock_guard<std::mutex> g(g_mu);
    Term answer;
    try {
        int fd = connection();
        std::string frame;
        bert::append_frame(frame, bert::encode(req));
        write_all(fd, frame);
        char h[bert::kFrameHeader];
        read_all(fd, h, sizeof h);
        auto fs = bert::scan_frame(std::string_view(h, sizeof h), size_t(1) << 31);
        std::string body(fs.length, '\0');
        read_all(fd, body.data(), body.size());
        if (auto err = bert::decode(body, answer))
            throw ErlangError("undecodable answer from bertd: " + err.message);
    } catch (...) {
        drop();
        throw;
    }
    if (answer.is_tuple(2) && answer[0].is_atom("reply")) return answer[1];
    if (answer.is_tuple(2) && answer[0].is_atom("error")) {
        const Term& d = answer[1];
        throw ErlangError(d.is_tuple(5) && d[3].is_binary() ? d[3].bytes() : bert::to_string(d, 300));
    }
    throw ErlangError("unexpected answer from bertd's Erlang link: " + bert::to_string(answer, 300));
}

Term node_term(std::string_view node) { return node.empty() ? Term::nil() : Term::atom(node); }
}  // namespace

Term erlang_rpc(std::string_view node, std::string_view module, std::string_view function,
                std::vector<Term> args) {
    Term result = request(Term::tuple({Term::atom("rpc"), node_term(node), Term::atom(module),
                                       Term::atom(function), Term::list(std::move(args))}));
    if (result.is_tuple(2) && result[0].is_atom("badrpc"))
        throw ErlangError("badrpc: " + bert::to_string(result[1], 300), result[1]);
    return result;
}

void erlang_send(std::string_view node, std::string_view name, const Term& message) {
    request(Term::tuple({Term::atom("send"), node_term(node), Term::atom(name), message}));
}

}  // namespace bertd
