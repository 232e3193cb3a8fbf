// master.h: the master process. Owns the listen socket and every generation's
// shared segment and slot sockets; forks and supervises acceptors, handler
// workers, the Erlang link and the companion VM through one child table; acts on
// signals. It never touches a client byte.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/children.h"
#include "core/cli.h"
#include "core/listen_sockets.h"
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
    static constexpr int64_t kQuitGraceUs = 10'000'000;   // graceful stop: then stragglers are killed
    static constexpr int64_t kTermGraceUs = 600'000;      // TERM: bertd is gone in under a second
    static constexpr int64_t kRetireGraceUs = 2'000'000;  // a retired worker's time to exit on SIGTERM
    static constexpr int64_t kDrainUs = 60'000'000;       // an old generation's longest request

    // One configuration's acceptors, workers and segment. A reload starts a new one;
    // the old one drains (its acceptors finish and hand idle connections over) and goes.
    struct Generation {
        Runtime rt;
        std::vector<Child*> workers;    // by slot, in the child table
        std::vector<Child*> acceptors;  // by number, in the child table
        enum class Phase { Serving, Draining } phase = Phase::Serving;
        int64_t drain_deadline_us = 0;
        bool workers_told = false;
        std::vector<int> quick_exits;  // by module: workers in a row that died in their first second
    };

    // -- the cycle (master.cc) --
    void install_signal_handlers();
    void start();
    void sleep_until_woken();
    void reap_children();
    void child_exited(Child& c, pid_t pid, int status);
    void tend_children();
    void begin_stop(bool graceful);
    void begin_drain();
    void wind_down_stopping();
    void reopen_logs();
    void finish();
    int64_t next_deadline() const;

    // -- generations (generation.cc) --
    std::unique_ptr<Generation> build_generation(Config config, uint64_t number);
    void make_slots(Generation& g);
    void start_generation(Generation& g);
    Generation& current() { return *gens_.back(); }
    Generation* generation(uint64_t number);
    void spawn_acceptor(Generation& g, uint32_t i);
    void start_worker(Generation& g, uint32_t slot);
    static bool slot_socketpair(SlotRuntime& s);
    void renew_slot_socket(Generation& g, uint32_t slot);
    void worker_exited(Generation& g, Child& w, pid_t pid, int status);
    void worker_died_young(Generation& g, Child& w, pid_t pid, int status);
    void module_healthy(Generation& g, uint32_t module);
    void relay_output(Child& c, pid_t pid);
    void acceptor_exited(Generation& g, Child& a, int status);
    void tend(Generation& g);
    bool wind_down(Generation& g, int64_t now);
    void retire_old_generations();
    void stop_generation(Generation& g, int64_t deadline_us);  // it serves no more; gone by the deadline
    void wake_acceptor(Generation& g, int32_t i);
    void reload_config();
    void reload_handlers();

    // -- the Erlang link and the companion VM (master_erlang.cc) --
    void start_erlang();
    void spawn_link();
    void spawn_companion();
    bool make_cookie_home();
    void remove_cookie_home();
    void erlang_exited(Child& p, pid_t pid, int status);
    void tend_erlang();
    void choose_companion(const Config& c);
    void erlang_reloaded(const Config& c);
    void stop_erlang();
    // The link and the VM run as the serving generation's user (the first's until it exists).
    const Credentials& erlang_user() const {
        return gens_.empty() ? first_config_.creds : gens_.back()->rt.config.creds;
    }

    // -- set-up and files (master_setup.cc) --
    void open_listen_socket(const Config& c);
    void close_inherited(const Generation* keep);
    void stderr_pipe(Fd& read_end, Fd& write_end);
    void write_pidfile();
    void remove_pidfile();
    void notify_ready(const std::string& msg);

    Options opts_;
    Config first_config_;
    ListenSockets listen_;  // one socket per `listen` entry, kept across reloads by address
    ListenSockets metrics_listen_;                   // metrics: {listen: ...}, kept the same way
    std::vector<std::unique_ptr<Generation>> gens_;  // back() serves; the others drain
    uint64_t next_generation_ = 1;
    // Draining: a graceful stop waits out drain_timeout, serving, while health says draining.
    enum class Phase { Running, Draining, Quitting, Terminating } phase_ = Phase::Running;
    bool serving() const { return phase_ == Phase::Running || phase_ == Phase::Draining; }
    int64_t stop_deadline_us_ = 0;
    int ready_fd_ = -1;
    bool pidfile_written_ = false;
    IpcNames ipc_ = IpcNames::create(getpid());
    erl::Identity id_;
    Children children_;
    // The Erlang link and the companion VM live for the server's life, across
    // generations; a reload sends the link SIGHUP and restarts the VM only when its
    // command line changed. Their `respawn` says whether they are wanted.
    Child& link_ = children_.add(ChildKind::Link, 0, 0, false);
    // The link's listen sockets (acceptors, handler workers): the master's for the server's
    // life, so their names are never free for another process while the link restarts.
    Fd link_listen_, handlers_listen_;
    Child& companion_ = children_.add(ChildKind::Companion, 0, 0, false);
    erl::CompanionCommand companion_cmd_;
    std::string cookie_home_;  // the companion VM's private HOME (its cookie); removed at exit
};

// Applies the command line's overrides (-p, -l, -a, -P, -H) to a config read from file.
void apply_overrides(const Options& o, Config& c);

// "generation 2 serves on 127.0.0.1:8000: 3 modules, 4 workers" (systemd's STATUS=).
std::string status_line(const Runtime& rt);

}  // namespace bertd
