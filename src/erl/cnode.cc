// cnode.cc: ei set-up, epmd, and the handshake threads. The threads only run ei's
// accept and connect (which block); everything after a handshake happens on the
// link's event loop. ei's handshake is used unchanged except for one thing: the
// distribution flags bertd announces gain DFLAG_SPAWN (see dist.h).
#include "erl/cnode.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "erl/dist.h"
#include "log/log.h"

extern "C" ei_socket_callbacks ei_default_socket_callbacks;

namespace bertd::erl {

namespace {

constexpr unsigned kHandshakeMs = 5000;  // per socket operation of a handshake
constexpr unsigned kDialMs = 3000;

ei_socket_callbacks g_callbacks;

// The handshake's name and challenge messages ([u16 length]['N'][u64 flags]...)
// carry our flags; everything else passes unchanged.
int write_patching_flags(void* ctx, const char* buf, ssize_t* len, unsigned tmo) {
    size_t n = size_t(*len);
    if (n >= 11 && buf[2] == 'N' && size_t(uint8_t(buf[0]) << 8 | uint8_t(buf[1])) == n - 2) {
        std::string copy(buf, n);
        uint64_t flags = 0;
        for (int i = 0; i < 8; ++i) flags = flags << 8 | uint8_t(copy[size_t(3 + i)]);
        flags |= kDflagSpawn;
        for (int i = 7; i >= 0; --i, flags >>= 8) copy[size_t(3 + i)] = char(flags & 0xff);
        return ei_default_socket_callbacks.write(ctx, copy.data(), len, tmo);
    }
    return ei_default_socket_callbacks.write(ctx, buf, len, tmo);
}

void start_epmd() {
    pid_t pid = fork();
    if (pid == 0) {
        close_fds_from(3, {});
        execlp("epmd", "epmd", "-daemon", static_cast<char*>(nullptr));
        _exit(127);
    }
    if (pid > 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
}

}  // namespace

struct CNodeShared;

CNode::~CNode() {
    {
        std::lock_guard<std::mutex> g(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
}

std::string CNode::start(const std::string& alive, const std::string& host, const std::string& node,
                         const std::string& cookie) {
    ei_init();
    g_callbacks = ei_default_socket_callbacks;
    g_callbacks.write = write_patching_flags;
    g_callbacks.writev = nullptr;  // ei then writes handshakes through write()
    in_addr any{};
    any.s_addr = htonl(INADDR_LOOPBACK);
    if (ei_connect_xinit_ussi(&ec_, host.c_str(), alive.c_str(), node.c_str(), &any, cookie.c_str(), 0,
                              &g_callbacks, sizeof g_callbacks, nullptr) < 0)
        return "ei_connect_xinit failed for node name " + node;
    name_ = node;
    int port = 0;
    int lfd = ei_listen(&ec_, &port, 128);
    if (lfd < 0) return std::string("cannot listen for Erlang nodes: ") + strerror(errno);
    listen_.reset(lfd);
    set_cloexec(lfd, true);
    port_ = port;
    if (auto err = republish(); !err.empty()) return err;
    erlang_pid* me = ei_self(&ec_);
    self_.node = node;
    self_.num = me->num;
    self_.serial = me->serial;
    self_.creation = ec_.creation;  // the one epmd gave us: peers drop messages to other creations
    notify_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    return {};
}

std::string CNode::republish() {
    epmd_.reset();
    for (int attempt = 0; attempt < 40; ++attempt) {
        int fd = ei_publish_tmo(&ec_, port_, 2000);
        if (fd >= 0) {
            epmd_.reset(fd);
            set_cloexec(fd, true);
            if (attempt > 0) log::info("registered %s with epmd", name_.c_str());
            return {};
        }
        if (attempt == 0) {
            log::info("no epmd answered; starting epmd -daemon");
            start_epmd();
        }
        usleep(100'000);
    }
    return "epmd refused to register " + name_ +
           " (is another node of that name running? is epmd installed?)";
}

void CNode::start_threads() {
    threads_.emplace_back([this] { accept_loop(); });
    threads_.emplace_back([this] { dial_loop(); });
}

void CNode::post(Handshake h) {
    {
        std::lock_guard<std::mutex> g(mu_);
        done_.push_back(std::move(h));
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(notify_.get(), &one, sizeof one);
}

std::vector<CNode::Handshake> CNode::take() {
    uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(notify_.get(), &v, sizeof v);
    std::lock_guard<std::mutex> g(mu_);
    return std::exchange(done_, {});
}

void CNode::dial(const std::string& node) {
    {
        std::lock_guard<std::mutex> g(mu_);
        to_dial_.push_back(node);
    }
    cv_.notify_all();
}

void CNode::accept_loop() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals belong to the event loop's thread
    for (;;) {
        {
            std::lock_guard<std::mutex> g(mu_);
            if (stop_) return;
        }
        pollfd pfd{listen_.get(), POLLIN, 0};
        if (poll(&pfd, 1, 200) <= 0) continue;
        ErlConnect conn{};
        int fd = ei_accept_tmo(&ec_, listen_.get(), &conn, kHandshakeMs);
        Handshake h;
        h.incoming = true;
        if (fd < 0) {
            h.error = "handshake with a connecting node failed (wrong cookie?)";
        } else {
            set_cloexec(fd, true);
            h.fd = fd;
            h.node = conn.nodename;
        }
        post(std::move(h));
    }
}

void CNode::dial_loop() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    for (;;) {
        std::string node;
        {
            std::unique_lock<std::mutex> g(mu_);
            cv_.wait(g, [&] { return stop_ || !to_dial_.empty(); });
            if (stop_) return;
            node = std::move(to_dial_.front());
            to_dial_.pop_front();
        }
        std::string copy = node;
        int fd = ei_connect_tmo(&ec_, copy.data(), kDialMs);
        Handshake h;
        h.node = node;
        if (fd < 0) {
            h.error = fd == ERL_NO_PORT   ? "not registered with epmd (not running?)"
                      : fd == ERL_TIMEOUT ? "timed out"
                                          : "connection or handshake failed (refused, or a wrong cookie?)";
        } else {
            set_cloexec(fd, true);
            h.fd = fd;
        }
        post(std::move(h));
    }
}

void close_connection(int fd) {
    if (fd >= 0 && ei_close_connection(fd) != 0) ::close(fd);
}

}  // namespace bertd::erl
