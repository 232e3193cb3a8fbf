// erlang.cc: the Erlang API of C++ handlers (see bertd/erlang.h), over bertd's
// Erlang link. A connection whose stream may be out of step (an error mid-request)
// is closed, never reused; the next one registers this process's names again.
#include "bertd/erlang.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <map>
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
std::map<std::string, ProcessFunction, std::less<>> g_processes;  // under g_mu

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

Term exchange(int fd, const Term& req) {
    std::string frame;
    bert::append_frame(frame, bert::encode(req));
    write_all(fd, frame);
    char h[bert::kFrameHeader];
    read_all(fd, h, sizeof h);
    auto fs = bert::scan_frame(std::string_view(h, sizeof h), size_t(1) << 31);
    std::string body(fs.length, '\0');
    read_all(fd, body.data(), body.size());
    Term answer;
    if (auto err = bert::decode(body, answer)) throw ErlangError("undecodable answer from bertd: " + err.message);
    return answer;
}

Term result_of(const Term& answer);

Term request(const Term& req) {
    std::lock_guard<std::mutex> g(g_mu);
    Term answer;
    try {
        bool fresh = g_fd < 0 || g_pid != getpid();
        int fd = connection();
        // A new connection is a new identity: names registered through a lost one come back.
        if (fresh)
            for (const auto& [name, fn] : g_processes)
                result_of(exchange(fd, Term::tuple({Term::atom("register"), Term::atom(name)})));
        answer = exchange(fd, req);
    } catch (...) {
        drop();
        throw;
    }
    return result_of(answer);
}

Term result_of(const Term& answer) {
    if (answer.is_tuple(2) && answer[0].is_atom("reply")) return answer[1];
    if (answer.is_tuple(2) && answer[0].is_atom("error")) {
        const Term& d = answer[1];
        throw ErlangError(d.is_tuple(5) && d[3].is_binary() ? d[3].bytes() : bert::to_string(d, 300));
    }
    throw ErlangError("unexpected answer from bertd's Erlang link: " + bert::to_string(answer, 300));
}

Term node_term(std::string_view node) { return node.empty() ? Term::nil() : Term::atom(node); }

Term millis(Timeout t) {
    return t ? Term(int64_t(std::max<int64_t>(t->count(), 0))) : Term::atom("infinity");
}
}  // namespace

Term ErlangNode::rpc(std::string_view module, std::string_view function, std::vector<Term> args,
                     Timeout timeout) const {
    return erlang_rpc(name_, module, function, std::move(args), timeout);
}

void ErlangNode::send(std::string_view registered_name, const Term& message) const {
    erlang_send(Term::tuple({Term::atom(registered_name), Term::atom(name_)}), message);
}

ErlangNode erlang_connect(std::string_view node) {
    Term name = request(Term::tuple({Term::atom("connect"), Term::atom(node)}));
    return ErlangNode(name.is_atom() ? name.atom_name() : std::string(node));
}

Term erlang_rpc(std::string_view node, std::string_view module, std::string_view function,
                std::vector<Term> args, Timeout timeout) {
    std::vector<Term> req{Term::atom("rpc"), node_term(node), Term::atom(module), Term::atom(function),
                          Term::list(std::move(args))};
    if (timeout) req.push_back(millis(timeout));
    Term result = request(Term::tuple(std::move(req)));
    if (result.is_tuple(2) && result[0].is_atom("badrpc"))
        throw ErlangError("badrpc: " + bert::to_string(result[1], 300), result[1]);
    return result;
}

void erlang_send(std::string_view node, std::string_view name, const Term& message) {
    request(Term::tuple({Term::atom("send"), node_term(node), Term::atom(name), message}));
}

void erlang_send(std::string_view name, const Term& message) { erlang_send(Term::atom(name), message); }

void erlang_send(const bert::Pid& pid, const Term& message) { erlang_send(Term(pid), message); }

void erlang_send(const Term& dest, const Term& message) {
    request(Term::tuple({Term::atom("send"), dest, message}));
}

bert::Pid self_pid() {
    Term pid = request(Term::tuple({Term::atom("self")}));
    if (pid.kind() != Term::Kind::Pid) throw ErlangError("bertd's Erlang link answered no pid");
    return std::get<bert::Pid>(pid.value());
}

std::optional<Term> erlang_recv_message(Timeout timeout) {
    Term got = request(Term::tuple({Term::atom("recv"), millis(timeout)}));
    if (got.is_tuple(2) && got[0].is_atom("message")) return got[1];
    if (got.is_atom("timeout")) return std::nullopt;
    throw ErlangError("unexpected answer from bertd's Erlang link: " + bert::to_string(got, 300));
}

void erlang_register_process(std::string_view name, ProcessFunction fn) {
    request(Term::tuple({Term::atom("register"), Term::atom(name)}));
    std::lock_guard<std::mutex> g(g_mu);
    g_processes.insert_or_assign(std::string(name), std::move(fn));
}

namespace detail {
ProcessFunction erlang_process(std::string_view name) {
    std::lock_guard<std::mutex> g(g_mu);
    auto it = g_processes.find(name);
    return it == g_processes.end() ? ProcessFunction() : it->second;
}
}  // namespace detail

}  // namespace bertd
