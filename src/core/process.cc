// process.cc: the child side of a spawn, up to exec, and descriptor helpers. Runs
// in a single-threaded process just forked from the master; it only rearranges
// descriptors and signal state before exec.
#include "core/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <algorithm>
#include <string_view>

namespace bertd {

void close_fds_from(int from, const std::vector<int>& keep) {
    if (keep.empty() && close_range(unsigned(from), ~0u, 0) == 0) return;
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (int fd = from; fd < max; ++fd)
        if (std::find(keep.begin(), keep.end(), fd) == keep.end()) ::close(fd);
}

namespace {
// Words that mean something to the shell itself: `exec` in front of them would
// fail or change their meaning.
bool shell_word(std::string_view w) {
    static const char* const kWords[] = {
        "!",        "{",       "}",     "[[",      "]]",       ".",     ":",    "alias",    "bg",
        "break",    "case",    "cd",    "command", "continue", "do",    "done", "elif",     "else",
        "esac",     "eval",    "exec",  "exit",    "export",   "fc",    "fg",   "fi",       "for",
        "function", "getopts", "hash",  "if",      "jobs",     "local", "read", "readonly", "return",
        "select",   "set",     "shift", "source",  "then",     "times", "trap", "type",     "ulimit",
        "umask",    "unalias", "unset", "until",   "wait",     "while"};
    for (const char* k : kWords)
        if (w == k) return true;
    return false;
}
}  // namespace

// One simple command: no leading assignment, no shell word first, and no operator
// outside quotes (;, &, |, parentheses, backquotes, a newline). Quotes, $VAR and
// redirections are fine after `exec`.
bool is_plain_command(std::string_view cmd) {
    size_t i = cmd.find_first_not_of(" \t");
    if (i == std::string_view::npos) return false;
    size_t end = cmd.find_first_of(" \t", i);
    std::string_view first = cmd.substr(i, end == std::string_view::npos ? cmd.size() - i : end - i);
    if (shell_word(first)) return false;
    bool in_word = true;  // still in the first word (an '=' there is an assignment)
    char quote = 0;
    for (; i < cmd.size(); ++i) {
        char ch = cmd[i];
        if (quote) {
            if (ch == quote)
                quote = 0;
            else if (ch == '\\' && quote == '"')
                ++i;
            continue;
        }
        switch (ch) {
            case '\'':
            case '"': quote = ch; break;
            case '\\': ++i; break;
            case '=':
                if (in_word) return false;
                break;
            case ';':
            case '&':
            case '|':
            case '(':
            case ')':
            case '`':
            case '\n': return false;
            case ' ':
            case '\t': in_word = false; break;
        }
    }
    return quote == 0;
}

std::string worker_shell_line(const std::string& command) {
    return is_plain_command(command) ? "exec " + command : command;
}

void give_worker_its_slot(int sock) {
    int s = sock;
    if (s == 3 || s == 4) s = fcntl(sock, F_DUPFD, 5);
    dup2(s, 3);
    dup2(s, 4);
    int fl = fcntl(3, F_GETFL);
    fcntl(3, F_SETFL, fl & ~O_NONBLOCK);
}

void exec_shell(const std::string& line, int keep_below) {
    // Dispositions are the defaults (the spawn reset them) before signals are
    // unblocked: a SIGTERM already pending must kill the child, not be lost.
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) {
        dup2(null, 0);
        if (null != 0) ::close(null);
    }
    close_fds_from(keep_below, {});
    execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    _exit(127);
}

size_t drain(int fd) {
    char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) break;
        total += size_t(n);
    }
    return total;
}

}  // namespace bertd
