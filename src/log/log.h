// log.h: the error log: levels 0 (errors) to 4 (debug), each line stamped with the
// time and the process that wrote it. One write(2) per line, so lines from
// different processes never interleave; never blocks (a line that would is dropped
// and counted). Never throws.
#pragma once

#include <string>

namespace bertd::log {

enum Level { Error = 0, Warn = 1, Info = 2, Verbose = 3, Debug = 4 };

// Sets where lines go (empty path: stderr), the level, and this process's role
// ("master", "acceptor 1", ...). Call again after fork to change the role.
void init(const std::string& path, int level, const std::string& role);
void set_role(const std::string& role);
void reopen();  // SIGUSR1: reopen the file at the same path
// Lines that would have blocked are dropped and counted; this says how many, if the
// log takes lines again (the next line says so too). For loops that wake regularly.
void report_dropped();
bool enabled(Level l);

void error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void warn(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void info(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace bertd::log
