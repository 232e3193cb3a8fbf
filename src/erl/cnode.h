// cnode.h: the C-node identity through erl_interface (ei): initialisation with
// bertd's socket callbacks, the listen socket, the epmd registration, and the two
// threads that run ei's blocking handshakes (one accepting, one dialling) so the
// link's event loop never waits on a slow or silent peer. After a handshake, the
// descriptor is the link's; ei never reads or writes it again.
#pragma once

#include <ei.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bert/term.h"
#include "core/process.h"

namespace bertd::erl {

class CNode {
public:
    CNode() = default;
    ~CNode();
    CNode(const CNode&) = delete;
    CNode& operator=(const CNode&) = delete;

    // Initialises ei, listens on an ephemeral port (all addresses) and registers
    // with epmd, starting `epmd -daemon` when none answers. Returns an error text,
    // empty on success.
    std::string start(const std::string& alive, const std::string& host, const std::string& node,
                      const std::string& cookie);
    // Registers again (epmd restarted); returns an error text, empty on success.
    std::string republish();
    int epmd_fd() const { return epmd_.get(); }

    const std::string& name() const { return name_; }
    const bert::Pid& self() const { return self_; }
    uint32_t creation() const { return ec_.creation; }

    // Starts the handshake threads. Results arrive through notify_fd() (readable
    // when take() has something).
    void start_threads();
    int notify_fd() const { return notify_.get(); }
    void dial(const std::string& node);

    struct Handshake {
        bool incoming = false;
        std::string node;  // the peer's name
        int fd = -1;       // the connected descriptor (blocking); -1 on failure
        std::string error;
    };
    std::vector<Handshake> take();

private:
    void accept_loop();
    void dial_loop();
    void post(Handshake h);

    ei_cnode ec_{};
    std::string name_;
    bert::Pid self_;
    Fd listen_, epmd_, notify_;
    int port_ = 0;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::string> to_dial_;
    std::vector<Handshake> done_;
    bool stop_ = false;
    std::vector<std::thread> threads_;
};

// Closes a descriptor that came out of a handshake (ei keeps a record of it).
void close_connection(int fd);

}  // namespace bertd::erl
