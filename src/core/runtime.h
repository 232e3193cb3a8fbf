// runtime.h: what one server generation is made of, built by the master before it
// forks: the config, the listen socket, the shared segment, the slot sockets and
// the wake-up eventfds. Children inherit it and use only their own parts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "core/process.h"
#include "io/ipc.h"
#include "shm/segment.h"

namespace bertd {

// What the master sends an acceptor on its control socket when a slot gets a fresh
// socketpair, with the new server end attached: the slot and its new epoch, big-endian.
constexpr size_t kSlotChangeSize = 12;
inline std::string slot_change(uint32_t slot, uint64_t epoch) {
    std::string m(kSlotChangeSize, '\0');
    for (int i = 0; i < 4; ++i) m[size_t(i)] = char(slot >> (24 - 8 * i));
    for (int i = 0; i < 8; ++i) m[size_t(4 + i)] = char(epoch >> (56 - 8 * i));
    return m;
}
inline bool read_slot_change(std::string_view m, uint32_t& slot, uint64_t& epoch) {
    if (m.size() != kSlotChangeSize) return false;
    slot = 0;
    epoch = 0;
    for (int i = 0; i < 4; ++i) slot = slot << 8 | uint8_t(m[size_t(i)]);
    for (int i = 0; i < 8; ++i) epoch = epoch << 8 | uint8_t(m[size_t(4 + i)]);
    return true;
}

// Module names to indices, looked up with the string_view a request's peek gives
// (no std::string made on the request path).
struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using NameIndex = std::unordered_map<std::string, uint32_t, NameHash, std::equal_to<>>;

struct ModuleRuntime {
    std::string name;
    uint32_t index = 0;  // in the segment's module table
    const ModuleConfig* config = nullptr;
};

// A slot's socketpair. Each new worker gets a fresh one (epoch + 1): whatever a dead
// worker left behind (bytes, or a process that kept its fds 3 and 4) stays with the old one.
struct SlotRuntime {
    Fd server_end;  // acceptors talk to the worker here (non-blocking, SO_PASSCRED)
    Fd worker_end;  // becomes the worker's fds 3 and 4
    uint64_t epoch = 0;
};

// One listen socket of the generation, with what its `listen` entry says.
struct ListenRuntime {
    Fd fd;
    // A TCP entry's other SO_REUSEPORT members (listen_sockets.h): acceptor i accepts on the
    // members m with m % acceptors == i, or on member i % members when there are fewer.
    std::vector<Fd> more;
    std::string name;             // "127.0.0.1:8000", "unix:/run/bertd.sock"
    bool proxy_protocol = false;  // connections start with a PROXY header
};

struct Runtime {
    Config config;
    std::unique_ptr<Segment> seg;
    std::vector<ListenRuntime> listeners;  // in the config's order
    Fd metrics_fd;                         // metrics: {listen: ...}: GET /metrics (net/metrics_http.h)
    std::vector<ModuleRuntime> modules;  // external modules, in config order
    NameIndex module_index;
    // Native modules, by name: their entry in the segment's module table (stats only;
    // they have no slots and no queues of their own).
    NameIndex native_index;
    IpcNames ipc;              // the names of this server's internal sockets
    std::string link_address;  // the Erlang link's abstract socket; empty when there is no link
    std::vector<SlotRuntime> slots;
    std::vector<Fd> acceptor_wake;  // one eventfd per acceptor
    // Per acceptor, a SOCK_SEQPACKET pair: the master sends each new slot socket down it.
    std::vector<Fd> control_master, control_acceptor;
    Fd master_wake;                 // acceptors poke the master here
    Fd handover;                    // idle connections of the previous generation arrive here
    uint64_t generation = 1;
    std::string access_log_path;
};

}  // namespace bertd
