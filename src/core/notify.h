// notify.h: telling systemd how the server is doing (sd_notify: READY, RELOADING,
// STOPPING, STATUS), for Type=notify units. Only the master calls it; without
// NOTIFY_SOCKET in its environment every call does nothing.
#pragma once

#include <string>

namespace bertd::notify {

void ready(const std::string& status);      // generation 1 serves, or a reload is over
void reloading(const std::string& status);  // a SIGHUP is being acted on
void stopping(const std::string& status);   // the server is going
void status(const std::string& status);     // a new one-line summary, nothing else

}  // namespace bertd::notify
