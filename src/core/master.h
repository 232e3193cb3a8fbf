// master.h: the master process. Owns the listen socket and every generation's
// shared segment and slot sockets; forks and supervises acceptors and handler
// workers; acts on signals. It never touches a client byte.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/cli.h"
#include "core/runtime.h"
#include "erl/identity.h"

namespace bertd {

class Master {
public:
    // `ready_fd` (or -1) gets "ok\n" once the server serves, or the error that
    // stopped it; a daemonizing parent waits on it.
    Master(Options opts, Config config, int ready_fd);
    int run();  // returns the exit status; throws on start-up errors

private:
    struct WorkerState {
        pid_t pid = 0;
        int64_t started_us = 0;
        int64_t respawn_at_us = 0;
        int64_t term_sent_us = 0;  // when it was asked to go; 0 if not
        int fails = 0;             // quick deaths in a row, for back-off
    };
    struct AcceptorState {
        pid_t pid = 0;
        int64_t started_us = 0;
        int64_t respawn_at_us = 0;
        int fails = 0;
    };
    // One configuration's acceptors, workers and segment. A reload starts a new one;
    // the old one drains (its acceptors finish and hand idle connections over) and goes.
    struct Generation {
        Runtime rt;
        std::vector<WorkerState> workers;
        std::vector<AcceptorState> acceptors;
        enum class Phase { Serving, Draining } phase = Phase::Serving;
        int64_t drain_deadline_us = 0;
        bool workers_told = false;
    };

    // The Erlang link and the companion VM live for the server's life, across
    // generations; a reload sends the link SIGHUP and restarts the VM only when its
    // command line changed.
    struct ErlangProcess {
        pid_t pid = 0;
        int64_t started_us = 0;
        int64_t respawn_at_us = 0;
        int fails = 0;
        bool wanted = false;
    };

    std::unique_ptr<Generation> build_generation(Config config, uint64_t number);
    void start_generation(Generation& g);
    Generation& current() { return *gens_.back(); }
    void spawn_acceptor(Generation& g, uint32_t i);
    void start_worker(Generation& g, uint32_t slot);
    void reap_children();
    void worker_exited(Generation& g, uint32_t slot, int status);
    void acceptor_exited(Generation& g, uint32_t i, int status);
    void tend(Generation& g);
    void retire_old_generations();
    void reload_config();
    void reload_handlers();
    void begin_stop(bool graceful);
    void signal_children(Generation& g, int sig, bool acceptors, bool workers);
    void signal_all(int sig, bool acceptors, bool workers);
    void wake_acceptor(Generation& g, int32_t i);
    int64_t next_deadline() const;
    bool anything_alive() const;
    void open_listen_socket(const Config& c);
    void write_pidfile();
    void remove_pidfile();
    void notify_ready(const std::string& msg);
    void spawn_link();
    void spawn_companion();
    void erlang_exited(ErlangProcess& p, const char* what, int status);
    void tend_erlang();
    void stop_erlang(int sig);
    void close_inherited();

    Options opts_;
    Config first_config_;
    Fd listen_fd_;
    std::string listen_key_;  // address and port the socket is bound to
    std::vector<std::unique_ptr<Generation>> gens_;  // back() serves; the others drain
    uint64_t next_generation_ = 1;
    enum class Phase { Running, Quitting, Terminating } phase_ = Phase::Running;
    int64_t stop_deadline_us_ = 0;
    int ready_fd_ = -1;
    bool pidfile_written_ = false;
    IpcNames ipc_ = IpcNames::create(getpid());
    erl::Identity id_;
    ErlangProcess link_, companion_;
    erl::CompanionCommand companion_cmd_;
};

// Applies the command line's overrides (-p, -l, -a, -P) to a config read from file.
void apply_overrides(const Options& o, Config& c);

}  // namespace bertd
