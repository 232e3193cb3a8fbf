// test_credentials.cc: resolving users and groups, and a real forked child dropping to
// one (as root, as CI runs; as another user only the lookups are checked).
#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

// Before CppUTest, whose operator-new macros <string> and <vector> do not survive.
#include "core/config.h"
#include "core/credentials.h"

#include <CppUTest/TestHarness.h>

using bertd::Credentials;

TEST_GROUP(Credentials){};

TEST(Credentials, a_user_is_found_by_name_or_number_with_its_primary_group_and_home) {
    Credentials by_name = bertd::resolve_credentials("nobody", "", "f.yaml:3");
    Credentials by_number = bertd::resolve_credentials(std::to_string(by_name.uid), "", "f.yaml:3");
    CHECK(by_name.set);
    CHECK(by_name == by_number);
    passwd* pw = getpwnam("nobody");
    LONGS_EQUAL(pw->pw_uid, by_name.uid);
    LONGS_EQUAL(pw->pw_gid, by_name.gid);
    STRCMP_EQUAL(pw->pw_dir, by_name.home.c_str());
    bool primary = false;
    for (gid_t g : by_name.groups) primary |= g == pw->pw_gid;
    CHECK(primary);
}

TEST(Credentials, a_group_replaces_the_primary_one) {
    group* gr = getgrnam("nogroup");
    CHECK(gr != nullptr);
    Credentials c = bertd::resolve_credentials("nobody", "nogroup", "f.yaml:3");
    LONGS_EQUAL(gr->gr_gid, c.gid);
}

TEST(Credentials, an_unknown_user_or_group_names_the_file_and_line) {
    try {
        bertd::resolve_credentials("no-such-user-bertd", "", "f.yaml:7");
        FAIL("resolved an unknown user");
    } catch (const bertd::ConfigError& e) {
        STRCMP_CONTAINS("f.yaml:7: user: no user 'no-such-user-bertd'", e.what());
    }
    try {
        bertd::resolve_credentials("nobody", "no-such-group-bertd", "f.yaml:8");
        FAIL("resolved an unknown group");
    } catch (const bertd::ConfigError& e) {
        STRCMP_CONTAINS("f.yaml:8: group: no group 'no-such-group-bertd'", e.what());
    }
}

TEST(Credentials, a_child_that_became_a_user_cannot_become_root_again) {
    if (geteuid() != 0) return;  // only root can drop; the integration tests fail loudly without it
    Credentials c = bertd::resolve_credentials("nobody", "", "test");
    pid_t pid = fork();
    if (pid == 0) {
        if (!bertd::become(c)) _exit(2);
        if (getuid() != c.uid || geteuid() != c.uid || getgid() != c.gid || getegid() != c.gid) _exit(3);
        if (setuid(0) == 0 || setgid(0) == 0) _exit(4);
        gid_t groups[64];
        int n = getgroups(64, groups);
        for (int i = 0; i < n; ++i)
            if (groups[i] == 0) _exit(5);  // root's supplementary groups are gone
        const char* home = getenv("HOME");
        _exit(home && c.home == home ? 0 : 6);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    LONGS_EQUAL(0, WEXITSTATUS(status));
}

TEST(Credentials, no_user_means_the_child_keeps_the_masters_identity) {
    Credentials none;
    uid_t before = geteuid();
    CHECK(bertd::become(none));
    LONGS_EQUAL(before, geteuid());
}
