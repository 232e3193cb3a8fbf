// process.h: what a child does between fork and exec, and the descriptor chores
// around it: handing a handler its slot on fds 3 and 4, running a command through
// /bin/sh, draining a socket, closing inherited descriptors. Nothing here knows
// about BERT, and the child-side calls never return into the master's code.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <string>
#include <string_view>
#include <vector>

#include "io/fd.h"

namespace bertd {

// The shell line that runs a handler's `command` with /bin/sh -c, as Ernie did
// (Erlang's open_port({spawn, Command})): `exec` goes in front only when the command
// is a plain program and arguments, so the worker's pid stays the handler's;
// assignments, `cd DIR && ...`, pipes and lists run as the shell runs them.
std::string worker_shell_line(const std::string& command);
bool is_plain_command(std::string_view command);

// In a forked child: `sock` becomes fds 3 and 4 (blocking), as a handler expects.
void give_worker_its_slot(int sock);

// In a forked child: restores the signal dispositions and mask a program expects,
// reads stdin from /dev/null, closes every descriptor >= `keep_below`, and runs
// `line` with /bin/sh -c (stdout and stderr inherited). Never returns.
[[noreturn]] void exec_shell(const std::string& line, int keep_below);

// Reads and discards whatever `fd` (non-blocking) holds now; returns the byte count.
size_t drain(int fd);

// Closes every descriptor >= `from` except those listed.
void close_fds_from(int from, const std::vector<int>& keep);

}  // namespace bertd
