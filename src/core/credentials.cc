// credentials.cc: user and group lookups (in the master, once per configuration) and
// the drop a child makes after fork. The lookups use NSS and run only in the master;
// the child side makes system calls and setenv, nothing that could block on a lookup.
#include "core/credentials.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/config.h"
#include "log/log.h"

namespace bertd {

namespace {
bool number(const std::string& s, unsigned long& out) {
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return false;
    out = strtoul(s.c_str(), nullptr, 10);
    return true;
}

std::vector<gid_t> supplementary(const char* name, gid_t gid) {
    int n = 32;
    std::vector<gid_t> list(static_cast<size_t>(n));
    while (getgrouplist(name, gid, list.data(), &n) < 0) list.resize(static_cast<size_t>(n));
    list.resize(static_cast<size_t>(n));
    return list;
}
}  // namespace

Credentials resolve_credentials(const std::string& user, const std::string& group, const std::string& where) {
    Credentials c;
    unsigned long id = 0;
    passwd* pw = number(user, id) ? getpwuid(uid_t(id)) : getpwnam(user.c_str());
    if (!pw)
        throw ConfigError(where + ": user: no user '" + user +
                          "' on this machine (create it: adduser --system)");
    c.set = true;
    c.user = pw->pw_name;
    c.uid = pw->pw_uid;
    c.gid = pw->pw_gid;
    c.home = pw->pw_dir && *pw->pw_dir ? pw->pw_dir : "/";
    if (!group.empty()) {
        struct group* gr = number(group, id) ? getgrgid(gid_t(id)) : getgrnam(group.c_str());
        if (!gr) throw ConfigError(where + ": group: no group '" + group + "' on this machine");
        c.gid = gr->gr_gid;
    }
    c.groups = supplementary(c.user.c_str(), c.gid);
    return c;
}

void resolve_users(Config& config) {
    const std::string where = !config.user_where.empty() ? config.user_where : config.path;
    if (config.user.empty() && !config.group.empty())
        throw ConfigError(config.path + ": group: needs user (the group alone changes nobody)");
    config.creds =
        config.user.empty() ? Credentials{} : resolve_credentials(config.user, config.group, where);
    for (auto& m : config.modules) {
        if (m.user.empty() && !m.group.empty())
            throw ConfigError(m.where + ": group: needs user in the same module");
        if (!m.user.empty() && m.type == ModuleConfig::Type::Native)
            throw ConfigError(m.where + ": user: only an external module's workers run as their own user " +
                              "(native modules run on the Erlang side, as the config's user)");
        m.creds = m.user.empty() ? config.creds : resolve_credentials(m.user, m.group, m.where);
    }
    if (geteuid() != 0) {
        // Only root can change users: a user other than our own is ignored, as nginx does.
        auto ours = [](Credentials& c) {
            if (!c.set) return;
            if (c.uid != geteuid())
                log::warn(
                    "user '%s' is ignored: only a master started as root runs its children as another user",
                    c.user.c_str());
            c = Credentials{};
        };
        ours(config.creds);
        for (auto& m : config.modules) ours(m.creds);
        return;
    }
    if (!config.creds.set)
        log::warn(
            "running as root with no user: handler workers, the Erlang link and the companion VM run as "
            "root; set 'user: NAME' in %s (or give -u NAME)",
            where.c_str());
}

bool become(const Credentials& c) {
    if (!c.set) return true;
    if (setgroups(c.groups.size(), c.groups.data()) != 0 || setgid(c.gid) != 0 || setuid(c.uid) != 0)
        return false;
    // Root cannot come back: a process that could setuid(0) again did not drop.
    if (c.uid != 0 && (setuid(0) == 0 || getuid() != c.uid || geteuid() != c.uid)) {
        errno = EPERM;
        return false;
    }
    setenv("HOME", c.home.c_str(), 1);
    setenv("USER", c.user.c_str(), 1);
    setenv("LOGNAME", c.user.c_str(), 1);
    return true;
}

void give_file(const std::string& path, const Credentials& c) {
    if (!c.set || path.empty() || geteuid() != 0) return;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return;  // the child's own open reports it
    if (fchown(fd, c.uid, c.gid) != 0)
        log::warn("cannot give %s to user %s: %s", path.c_str(), c.user.c_str(), strerror(errno));
    ::close(fd);
}

bool enter_home_of(const Credentials& c) {
    if (!c.set) return true;
    setenv("HOME", c.home.c_str(), 1);
    struct stat st;
    return lstat((c.home + "/.erlang.cookie").c_str(), &st) == 0;
}

void give_new_cookie(const Credentials& c, bool had_cookie) {
    if (!c.set || had_cookie || geteuid() != 0) return;
    int fd = ::open((c.home + "/.erlang.cookie").c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;  // no cookie from the file (--cookie or erlang.cookie)
    if (fchown(fd, c.uid, c.gid) != 0)
        log::warn("cannot give the Erlang cookie in %s to %s: %s", c.home.c_str(), c.user.c_str(),
                  strerror(errno));
    ::close(fd);
}

}  // namespace bertd
