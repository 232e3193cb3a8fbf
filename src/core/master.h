// master.h: the master process. Owns the listen socket, the shared segment and
// the slot sockets; forks and supervises acceptors and handler workers; acts on
// signals. It never touches a client byte.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/cli.h"
#include "core/runtime.h"

namespace bertd {

class Master {
public:
    explicit Master(Options opts, Config config);
    int run();  // returns the exit status

private:
    struct WorkerState {
        pid_t pid = 0;
        int64_t started_us = 0;
        int64_t respawn_at_us = 0;
        int64_t term_sent_us = 0;  // when it was asked to go (retire); 0 if not
        int fails = 0;             // quick deaths in a row, for back-off
    };
    struct AcceptorState {
        pid_t pid = 0;
        int64_t started_us = 0;
        int64_t respawn_at_us = 0;
        int fails = 0;
    };

    void build_runtime();
    void open_listen_socket();
    void spawn_acceptor(uint32_t i);
    void start_worker(uint32_t slot);
    void reap_children();
    void worker_exited(uint32_t slot, int status);
    void acceptor_exited(uint32_t i, int status);
    void tend_slots();
    void tend_acceptors();
    void reload_handlers();
    void begin_stop(bool graceful);
    void signal_children(int sig, bool acceptors, bool workers);
    void wake_acceptor(int32_t i);
    int64_t next_deadline() const;
    bool anything_alive() const;

    Options opts_;
    Runtime rt_;
    std::vector<WorkerState> workers_;
    std::vector<AcceptorState> acceptors_;
    enum class Phase { Running, Quitting, Terminating } phase_ = Phase::Running;
    int64_t stop_deadline_us_ = 0;
    std::string pidfile_;
};

}  // namespace bertd
