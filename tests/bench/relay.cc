// relay.cc: the baseline bertd is measured against: the same hops (client -> server ->
// worker over a socketpair on fds 3/4 -> back) with no protocol logic at all. It never
// decodes a byte beyond the 4-byte frame header, and listens on 127.0.0.1 only.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr size_t kMaxFrame = 256u << 20;
constexpr uint64_t kListenTag = 0, kSignalTag = 1, kWorkerBase = 2;
constexpr uint64_t kClientBase = uint64_t(1) << 32;  // tag = kClientBase + fd

uint32_t frame_length(const std::string& b) {
    return (uint32_t(uint8_t(b[0])) << 24) | (uint32_t(uint8_t(b[1])) << 16) | (uint32_t(uint8_t(b[2])) << 8) |
           uint8_t(b[3]);
}

// Bytes of a whole frame at the front of `b`, or 0 while it is incomplete.
size_t whole_frame(const std::string& b) {
    if (b.size() < 4) return 0;
    size_t n = 4 + size_t(frame_length(b));
    return b.size() >= n ? n : 0;
}

struct Client {
    bool open = false;
    uint64_t serial = 0;  // tells a reused fd from the connection a worker is answering
    bool busy = false;    // a request is waiting for or at a worker; answers leave in order
    bool waiting = false;
    std::string in, out;
    uint32_t events = 0;
};

struct Worker {
    pid_t pid = -1;
    int fd = -1;
    int client = -1;
    uint64_t serial = 0;
    std::string in, out;  // out: the part of a request the socketpair did not take at once
    uint32_t events = 0;
};

class Relay {
public:
    int setup(int port, int workers, const char* handler) {
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        sigprocmask(SIG_BLOCK, &set, nullptr);
        sig_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
        add(sig_, EPOLLIN, kSignalTag);
        signal(SIGPIPE, SIG_IGN);

        lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(uint16_t(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || listen(lfd_, 4096) < 0) {
            std::fprintf(stderr, "relay: cannot listen on 127.0.0.1:%d: %s\n", port, std::strerror(errno));
            return 1;
        }
        socklen_t len = sizeof a;
        getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
        add(lfd_, EPOLLIN, kListenTag);

        workers_.resize(size_t(workers));
        for (size_t i = 0; i < workers_.size(); i++)
            if (!spawn(i, handler, set)) return 1;
        std::printf("listening 127.0.0.1:%d workers %d\n", ntohs(a.sin_port), workers);
        std::fflush(stdout);
        return 0;
    }

    int loop() {
        std::vector<epoll_event> evs(256);
        for (;;) {
            int n = epoll_wait(ep_, evs.data(), int(evs.size()), -1);
            if (n < 0) {
                if (errno == EINTR) continue;
                std::perror("relay: epoll_wait");
                return 1;
            }
            for (int i = 0; i < n; i++) {
                uint64_t tag = evs[i].data.u64;
                uint32_t e = evs[i].events;
                if (tag == kListenTag) accept_all();
                else if (tag == kSignalTag) return 0;
                else if (tag < kClientBase) {
                    if (!on_worker(workers_[tag - kWorkerBase], e)) return 1;
                } else on_client(int(tag - kClientBase), e);
            }
        }
    }

    // Stops every worker: SIGTERM, a short grace, then SIGKILL.
    ~Relay() {
        for (auto& w : workers_)
            if (w.pid > 0) kill(w.pid, SIGTERM);
        for (int tries = 0; tries < 100; tries++) {
            bool alive = false;
            for (auto& w : workers_)
                if (w.pid > 0) {
                    if (waitpid(w.pid, nullptr, WNOHANG) == w.pid) w.pid = -1;
                    else alive = true;
                }
            if (!alive) break;
            usleep(10000);
        }
        for (auto& w : workers_)
            if (w.pid > 0) {
                kill(w.pid, SIGKILL);
                waitpid(w.pid, nullptr, 0);
            }
    }

private:
    bool spawn(size_t i, const char* handler, const sigset_t& blocked) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return std::perror("socketpair"), false;
        pid_t pid = fork();
        if (pid < 0) return std::perror("fork"), false;
        if (pid == 0) {
            // The handler reads fd 3 and writes fd 4: both are its end of the pair.
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            sigprocmask(SIG_UNBLOCK, &blocked, nullptr);
            dup2(sv[1], 3);
            dup2(sv[1], 4);
            execl(handler, handler, static_cast<char*>(nullptr));
            std::fprintf(stderr, "relay: cannot run %s: %s\n", handler, std::strerror(errno));
            _exit(127);
        }
        close(sv[1]);
        fcntl(sv[0], F_SETFL, O_NONBLOCK);
        Worker& w = workers_[i];
        w.pid = pid;
        w.fd = sv[0];
        add(w.fd, EPOLLIN, kWorkerBase + i);
        w.events = EPOLLIN;
        idle_.push_back(i);
        return true;
    }

    void add(int fd, uint32_t events, uint64_t tag) {
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = tag;
        epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
    }
    void mod(int fd, uint32_t events, uint64_t tag, uint32_t& current) {
        if (current == events) return;
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = tag;
        epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev);
        current = events;
    }

    void accept_all() {
        for (;;) {
            int fd = accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;  // EAGAIN, or out of descriptors: the backlog keeps them
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (size_t(fd) >= clients_.size()) clients_.resize(size_t(fd) + 1);
            Client& c = clients_[size_t(fd)];
            c = Client{};
            c.open = true;
            c.serial = ++serial_;
            c.events = EPOLLIN;
            add(fd, EPOLLIN, kClientBase + uint64_t(fd));
        }
    }

    void close_client(int fd) {
        Client& c = clients_[size_t(fd)];
        close(fd);
        c.open = false;
        std::string().swap(c.in);
        std::string().swap(c.out);
    }

    void on_client(int fd, uint32_t e) {
        Client& c = clients_[size_t(fd)];
        if (!c.open) return;
        if (e & EPOLLOUT) {
            if (!flush_client(fd)) return;
        }
        if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            char buf[64 * 1024];
            for (;;) {
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r < 0 && errno == EINTR) continue;
                if (r < 0 && errno == EAGAIN) break;
                if (r <= 0) return close_client(fd);
                c.in.append(buf, size_t(r));
                if (c.in.size() >= 4 && frame_length(c.in) > kMaxFrame) return close_client(fd);
            }
            next_request(fd);
        }
    }

    // Hands the client's next whole frame to an idle worker, or queues the client.
    void next_request(int fd) {
        Client& c = clients_[size_t(fd)];
        if (c.busy || whole_frame(c.in) == 0) return;
        c.busy = true;
        if (idle_.empty()) {
            c.waiting = true;
            wait_.push_back({fd, c.serial});
            return;
        }
        size_t w = idle_.back();  // the most recently used worker: its pages are warm
        idle_.pop_back();
        dispatch(w, fd);
    }

    void dispatch(size_t wi, int fd) {
        Worker& w = workers_[wi];
        Client& c = clients_[size_t(fd)];
        c.waiting = false;
        w.client = fd;
        w.serial = c.serial;
        size_t n = whole_frame(c.in);
        size_t sent = 0;
        while (sent < n) {
            ssize_t s = send(w.fd, c.in.data() + sent, n - sent, MSG_NOSIGNAL);
            if (s < 0 && errno == EINTR) continue;
            if (s <= 0) break;
            sent += size_t(s);
        }
        if (sent < n) {
            w.out.assign(c.in, sent, n - sent);
            mod(w.fd, EPOLLIN | EPOLLOUT, kWorkerBase + wi, w.events);
        }
        c.in.erase(0, n);
    }

    // False when the worker is gone: the baseline does not respawn, it stops.
    bool on_worker(Worker& w, uint32_t e) {
        size_t wi = size_t(&w - workers_.data());
        if (e & EPOLLOUT) {
            while (!w.out.empty()) {
                ssize_t s = send(w.fd, w.out.data(), w.out.size(), MSG_NOSIGNAL);
                if (s < 0 && errno == EINTR) continue;
                if (s < 0 && errno == EAGAIN) break;
                if (s <= 0) return worker_died(w);
                w.out.erase(0, size_t(s));
            }
            if (w.out.empty()) mod(w.fd, EPOLLIN, kWorkerBase + wi, w.events);
        }
        if (!(e & (EPOLLIN | EPOLLHUP | EPOLLERR))) return true;
        char buf[64 * 1024];
        for (;;) {
            ssize_t r = recv(w.fd, buf, sizeof buf, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && errno == EAGAIN) break;
            if (r <= 0) return worker_died(w);
            w.in.append(buf, size_t(r));
        }
        size_t n = whole_frame(w.in);
        if (n == 0) return true;
        answer_client(w, n);
        w.in.erase(0, n);
        w.client = -1;
        // The freed worker takes the longest-waiting client that is still connected.
        while (!wait_.empty()) {
            auto [fd, serial] = wait_.front();
            wait_.pop_front();
            Client& c = clients_[size_t(fd)];
            if (c.open && c.serial == serial && c.waiting) {
                dispatch(wi, fd);
                return true;
            }
        }
        idle_.push_back(wi);
        return true;
    }

    void answer_client(Worker& w, size_t n) {
        int fd = w.client;
        Client& c = clients_[size_t(fd)];
        if (!c.open || c.serial != w.serial) return;  // the client left meanwhile
        c.busy = false;
        if (c.out.empty()) {
            size_t sent = 0;
            while (sent < n) {
                ssize_t s = send(fd, w.in.data() + sent, n - sent, MSG_NOSIGNAL);
                if (s < 0 && errno == EINTR) continue;
                if (s < 0 && errno == EAGAIN) break;
                if (s <= 0) return close_client(fd);
                sent += size_t(s);
            }
            if (sent < n) c.out.assign(w.in, sent, n - sent);
        } else {
            c.out.append(w.in, 0, n);
        }
        if (!c.out.empty()) mod(fd, EPOLLIN | EPOLLOUT, kClientBase + uint64_t(fd), c.events);
        next_request(fd);
    }

    bool flush_client(int fd) {
        Client& c = clients_[size_t(fd)];
        while (!c.out.empty()) {
            ssize_t s = send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
            if (s < 0 && errno == EINTR) continue;
            if (s < 0 && errno == EAGAIN) return true;
            if (s <= 0) {
                close_client(fd);
                return false;
            }
            c.out.erase(0, size_t(s));
        }
        mod(fd, EPOLLIN, kClientBase + uint64_t(fd), c.events);
        return true;
    }

    bool worker_died(Worker& w) {
        std::fprintf(stderr, "relay: worker %d closed its socketpair; stopping\n", int(w.pid));
        return false;
    }

    int ep_ = -1, sig_ = -1, lfd_ = -1;
    std::vector<Worker> workers_;
    std::vector<Client> clients_;
    std::vector<size_t> idle_;
    std::deque<std::pair<int, uint64_t>> wait_;
    uint64_t serial_ = 0;
};

[[noreturn]] void usage(const char* why) {
    if (why) std::fprintf(stderr, "relay: %s\n", why);
    std::fprintf(stderr,
                 "usage: relay --handler PATH [--port N] [--workers K]\n"
                 "Listens on 127.0.0.1:N (0: any free port; the port is printed), spawns K handler\n"
                 "processes on fds 3/4 and relays 4-byte-framed requests to idle ones. SIGTERM stops it.\n");
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    int port = 0, workers = 2;
    const char* handler = nullptr;
    for (int i = 1; i < argc; i++) {
        std::string_view a = argv[i];
        if (a == "-h" || a == "--help") usage(nullptr);
        if (i + 1 >= argc) usage("missing option value");
        const char* v = argv[++i];
        char* end = nullptr;
        long n = std::strtol(v, &end, 10);
        bool numeric = end != v && *end == '\0';
        if (a == "--port" && numeric && n >= 0 && n <= 65535) port = int(n);
        else if (a == "--workers" && numeric && n >= 1 && n <= 1024) workers = int(n);
        else if (a == "--handler") handler = v;
        else usage(("bad option " + std::string(a) + " " + v).c_str());
    }
    if (!handler) usage("--handler is required");
    Relay r;
    if (r.setup(port, workers, handler) != 0) return 1;
    return r.loop();
}
