// identity.h: who bertd is on the Erlang distribution: the C-node's name, the
// companion VM's name (when native modules come with codepaths), the cookie, and
// the command that starts the companion. Pure decisions from options and config;
// the only I/O is reading (or creating) ~/.erlang.cookie and finding the helper beam.
#pragma once

#include <string>
#include <vector>

#include "core/cli.h"
#include "core/config.h"

namespace bertd::erl {

struct Identity {
    bool enabled = false;     // the link runs at all
    bool long_names = true;   // -name (true) or -sname
    std::string host;         // the part after '@'
    std::string cnode;        // the C-node's full name, alive@host
    std::string cnode_alive;  // the part before '@'
    std::string companion;    // the companion VM's full name; empty when there is none
    std::string cookie;
    bool cookie_from_file = false;  // ~/.erlang.cookie: the companion reads it itself
    std::string ebin;               // directory holding bertd_native.beam
};

// Decides the identity. Names, in order: --name, --sname, erlang.name, erlang.sname,
// else the short name bertd_<port>. A companion VM takes that name (so native code
// that refers to it keeps working, as under Ernie) and the C-node becomes
// <alive>_bertd@<host> (or erlang.link_name); without a companion the C-node takes
// it. Cookie: --cookie, erlang.cookie, else ~/.erlang.cookie (created the way erl
// creates it when missing). Throws ConfigError with what to fix.
Identity resolve_identity(const Options& opts, const Config& config);

// True when some native module needs the companion VM (codepaths, no node).
bool needs_companion(const Config& config);

// The Erlang node a native module runs on: its `node`, else the companion.
std::string module_node(const ModuleConfig& m, const Identity& id);

// The companion VM's command line (for /bin/sh -c) and the environment entries to
// add. The cookie is never on a command line (erlexec copies ERL_FLAGS into beam's
// argv, where ps shows it): when `cookie` is set, the master writes it to
// .erlang.cookie in a private HOME for the VM, which puts $BERTD_HOME back as HOME
// once it has booted.
struct CompanionCommand {
    std::string command;
    std::vector<std::string> env;  // "NAME=value"
    std::string cookie;
};
CompanionCommand companion_command(const Identity& id, const Config& config, const Options& opts);

// Quotes one word for /bin/sh.
std::string shell_quote(const std::string& word);

}  // namespace bertd::erl
