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

struct SlotRuntime {
    Fd server_end;  // acceptors talk to the worker here (non-blocking)
    Fd worker_end;  // becomes the worker's fds 3 and 4; kept by the master for respawns
};

struct Runtime {
    Config config;
    std::unique_ptr<Segment> seg;
    Fd listen_fd;
    std::vector<ModuleRuntime> modules;  // external modules, in config order
    NameIndex module_index;
    // Native modules, by name: their entry in the segment's module table (stats only;
    // they have no slots and no queues of their own).
    NameIndex native_index;
    IpcNames ipc;              // the names of this server's internal sockets
    std::string link_address;  // the Erlang link's abstract socket; empty when there is no link
    std::vector<SlotRuntime> slots;
    std::vector<Fd> acceptor_wake;  // one eventfd per acceptor
    Fd master_wake;                 // acceptors poke the master here
    Fd handover;                    // idle connections of the previous generation arrive here
    uint64_t generation = 1;
    std::string access_log_path;
};

}  // namespace bertd
