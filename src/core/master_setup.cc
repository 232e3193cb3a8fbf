// master_setup.cc: what the master sets up around its children: the listen socket,
// the descriptors a child must not keep, the pidfile and the readiness line. Start-up
// errors are exceptions with what to fix; nothing here runs per request.
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include "core/master.h"
#include "core/pidfile.h"
#include "log/log.h"

namespace bertd {

void apply_overrides(const Options& o, Config& c) {
    if (o.port >= 0) c.port = o.port;
    if (o.log_level >= 0) c.log_level = o.log_level;
    if (!o.access_log.empty()) c.access_log = o.access_log;
    if (!o.pidfile.empty()) c.pidfile = o.pidfile;
    if (!o.listen.empty()) c.listen = o.listen, c.listeners.clear();  // -H: that one address
    if (!o.user.empty()) c.user = o.user, c.user_where = "-u";
}

std::string status_line(const Runtime& rt) {
    const Config& c = rt.config;
    size_t workers = 0;
    for (const auto& m : c.modules)
        if (m.type == ModuleConfig::Type::External) workers += size_t(m.count);
    return "generation " + std::to_string(rt.generation) + " serves on " + listen_text(c) + ": " +
           std::to_string(c.modules.size()) + " modules, " + std::to_string(workers) + " workers";
}

// Every `listen` entry's socket; those already open at the same address are kept.
void Master::open_listen_socket(const Config& c) {
    std::vector<ListenConfig> metrics;
    if (!c.metrics_listen.empty())
        metrics.push_back(ListenConfig{c.metrics_listen, false, -1, "", "", c.metrics_where});
    metrics_listen_.update(metrics, kMetricsPort, c.metrics_where);
    // One SO_REUSEPORT member per acceptor (`acceptors: auto` is one per CPU, as build_generation says).
    size_t acceptors = c.acceptors > 0 ? size_t(c.acceptors) : size_t(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
    listen_.update(listen_entries(c), c.port, opts_.listen.empty() ? c.path : "-H", acceptors);
}

// In a child: closes what belongs to the master and to the generations (listen,
// slot and hand-over sockets), keeping only `keep`'s server side (an acceptor's
// own generation; nullptr for the Erlang link).
void Master::close_inherited(const Generation* keep) {
    listen_.forget();
    metrics_listen_.forget();
    link_listen_.reset();
    handlers_listen_.reset();
    if (ready_fd_ >= 0) ::close(ready_fd_);
    ready_fd_ = -1;
    for (auto& g : gens_) {
        g->rt.control_master.clear();
        if (g.get() == keep) {
            for (auto& s : g->rt.slots) s.worker_end.reset();
            continue;
        }
        g->rt.listeners.clear();
        g->rt.metrics_fd.reset();
        g->rt.slots.clear();
        g->rt.handover.reset();
        g->rt.control_acceptor.clear();
    }
}

// A child's stderr comes to the master through this pipe, and each line is passed on
// (relay_output). Without one (out of descriptors) the child keeps bertd's stderr.
void Master::stderr_pipe(Fd& read_end, Fd& write_end) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        log::error("no stderr pipe for a child: %s", strerror(errno));
        return;
    }
    read_end.reset(p[0]);
    write_end.reset(p[1]);
}

void Master::write_pidfile() {
    const std::string& path = current().rt.config.pidfile;
    if (path.empty()) return;
    bertd::write_pidfile(path);
    pidfile_written_ = true;
}

void Master::remove_pidfile() {
    if (pidfile_written_) bertd::remove_pidfile(first_config_.pidfile);
}

void Master::notify_ready(const std::string& msg) {
    if (ready_fd_ < 0) return;
    [[maybe_unused]] ssize_t n = ::write(ready_fd_, msg.data(), msg.size());
    ::close(ready_fd_);
    ready_fd_ = -1;
}

}  // namespace bertd
