// notify.cc: sd_notify from libsystemd, one datagram per state change. A failure
// to tell systemd is logged once at debug level and never stops the server; the
// master's children never inherit NOTIFY_SOCKET (Children::spawn drops it).
#include "core/notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstring>

#include "log/log.h"

namespace bertd::notify {

namespace {
void send(const std::string& state) {
    if (int rc = sd_notify(0, state.c_str()); rc < 0) log::debug("sd_notify: %s", strerror(-rc));
}

std::string status_line(const std::string& s) {
    std::string line = s;
    for (char& c : line)
        if (c == '\n') c = ' ';
    return "STATUS=" + line;
}
}  // namespace

void ready(const std::string& s) { send("READY=1\n" + status_line(s)); }

void reloading(const std::string& s) {
    // MONOTONIC_USEC lets systemd (253 and later) match the READY=1 that ends the reload.
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long us = (long long)ts.tv_sec * 1'000'000 + ts.tv_nsec / 1000;
    send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(us) + "\n" + status_line(s));
}

void stopping(const std::string& s) { send("STOPPING=1\n" + status_line(s)); }

void status(const std::string& s) { send(status_line(s)); }

}  // namespace bertd::notify
