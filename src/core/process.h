// process.h: process helpers shared by the master and its children: spawning a
// handler command on fds 3 and 4, draining a socket, closing inherited descriptors.
// Nothing here knows about BERT.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "io/fd.h"

namespace bertd {

// Forks a handler worker: `command` runs through /bin/sh with `sock` as fds 3
// and 4, stdin from /dev/null, stdout and stderr inherited, default signal
// dispositions, and no other descriptors. Returns the child's pid (-1 on failure).
pid_t spawn_worker(const std::string& command, int sock);

// Reads and discards whatever `fd` (non-blocking) holds now; returns the byte count.
size_t drain(int fd);

// Closes every descriptor >= `from` except those listed.
void close_fds_from(int from, const std::vector<int>& keep);

}  // namespace bertd
