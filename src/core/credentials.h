// credentials.h: who the master's children run as, the nginx way. The master (root)
// resolves `user`/`group` once per configuration, before it forks; a child drops to
// them right after fork and before it runs anything of the config's. Nothing here
// ever raises a privilege, and a child that cannot drop never runs.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace bertd {

struct Config;
struct Options;

struct Credentials {
    bool set = false;  // false: the child keeps the master's identity
    std::string user;  // the name (USER, LOGNAME)
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary: the user's, as initgroups(3) would set them
    std::string home;           // HOME (the Erlang cookie is read there)

    bool operator==(const Credentials&) const = default;
};

// `user` and `group` are names or numbers; an empty group is the user's primary group.
// Throws ConfigError (prefixed with `where`) for an unknown user or group.
Credentials resolve_credentials(const std::string& user, const std::string& group, const std::string& where);

// Fills config.creds and each module's creds from `user`/`group`. As root with no user,
// children keep root, as under Ernie, and a warning names the fix; not as root, a user
// other than our own is ignored with a warning (only root can change users).
void resolve_users(Config& config);

// In a forked child: supplementary groups, gid, then uid, each checked; HOME, USER and
// LOGNAME follow. False (errno set) when any step failed: the child must exit.
bool become(const Credentials& c);

// Before children reopen a file themselves (the access log), the master creates it
// if it is missing and gives it to their user.
void give_file(const std::string& path, const Credentials& c);

// The Erlang cookie is the children's user's: the master takes their HOME (where
// ~/.erlang.cookie is read) and says whether the cookie was there; one the master then
// created, as an Erlang node would have, is given to them.
bool enter_home_of(const Credentials& c);
void give_new_cookie(const Credentials& c, bool had_cookie);

}  // namespace bertd
