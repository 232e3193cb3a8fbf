// pidfile.h: the master's pidfile. Written so that no symlink or file another user
// planted in its directory is ever followed or overwritten (a fresh mkstemp name,
// then rename), and read so that only a live bertd counts as a running server.
#pragma once

#include <sys/types.h>

#include <string>

namespace bertd {

// Writes this process's pid to `path` through a temporary made with mkostemp (O_EXCL,
// O_NOFOLLOW) in the same directory, renamed over `path`. Throws with what went wrong.
void write_pidfile(const std::string& path);

// Removes `path` if it still names this process (another server may have taken it over).
void remove_pidfile(const std::string& path);

// The pid `path` names if that process is a running bertd: alive, not a zombie, and
// with bertd's name (a recycled pid is some other program). 0 otherwise.
pid_t running_server(const std::string& path);

}  // namespace bertd
