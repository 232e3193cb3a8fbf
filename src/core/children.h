// children.h: the master's one table of the processes it forks, after nginx's
// ngx_process_t: what each child is, its pid, its generation, whether it is
// respawned, and its back-off. One spawn and one reap for every kind, so acceptors,
// handler workers, the Erlang link and the companion VM share one lifecycle. Only
// the master uses it; it never waits for nor signals a pid that is not in the table.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/child_output.h"
#include "core/credentials.h"
#include "io/backoff.h"

namespace bertd {

enum class ChildKind { Acceptor, Worker, Link, Companion };

struct Child {
    ChildKind kind = ChildKind::Acceptor;
    uint64_t generation = 0;   // acceptors and workers; 0 for the link and the VM (the server's life)
    uint32_t index = 0;        // the acceptor's number or the worker's slot
    pid_t pid = 0;             // 0 while it is not running
    bool respawn = false;      // started again once gone; cleared to let a child go for good
    int64_t started_us = 0;    // monotonic
    int64_t term_sent_us = 0;  // when it was asked to go; 0 if it was not
    Backoff backoff;           // quick deaths in a row, and when the next start may be
    // Workers and the companion VM lead a process group of their own: what they leave
    // behind (the program a `cd ... &&` shell started, a child a handler forked, the VM's
    // helpers) is signalled with them, and killed once they are gone.
    bool own_group = false;
    ChildOutput output;  // workers and the VM: their stderr, which the master relays to the error log
};

// "exited with status 1", "killed by signal Killed".
std::string describe_status(int status);

class Children {
public:
    Child& add(ChildKind kind, uint64_t generation, uint32_t index, bool respawn);
    // Drops the children of a generation; none of them may be running.
    void forget_generation(uint64_t generation);

    // Forks `c`. The child becomes `as` (a child that cannot exits at once), dies with
    // the master (PR_SET_PDEATHSIG), gets the default disposition of every signal the
    // master catches (its mask stays blocked, as the master's: each child unblocks once
    // it is ready), keeps none of the table's output pipes, and runs `body`, which must
    // not return. In the master: true, with c.pid and c.started_us set; on failure the
    // error is logged and the next attempt is a second away.
    bool spawn(Child& c, const Credentials& as, const std::function<void()>& body);
    bool spawn(Child& c, const std::function<void()>& body) { return spawn(c, Credentials{}, body); }

    // Waits for every child that has exited and calls `exited` for each of the table's
    // with the pid it had (c.pid is 0 by then); other pids (none are expected) are only
    // collected. What is left of a group leader's group is killed first.
    void reap(const std::function<void(Child&, pid_t pid, int status)>& exited);

    // Sends `sig` to a running child (its whole group when it leads one).
    static void kill(const Child& c, int sig);
    // Sends `sig` to every running child `which` selects.
    void signal(int sig, const std::function<bool(const Child&)>& which);
    // Asks a child to go (SIGTERM) once; true if it was running and had not been asked yet.
    static bool ask_to_go(Child& c, int64_t now_us);

    bool any_running(const std::function<bool(const Child&)>& which = nullptr) const;
    // The earliest respawn still ahead of `now_us` (else `until`).
    int64_t next_respawn(int64_t now_us, int64_t until) const;

    template <class F>
    void for_each(F f) {
        for (auto& c : all_) f(*c);
    }

private:
    std::vector<std::unique_ptr<Child>> all_;  // pointers stay valid while a child is in the table
};

}  // namespace bertd
