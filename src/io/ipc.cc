// ipc.cc: the token and the names built from it.
#include "io/ipc.h"

#include <dirent.h>
#include <sys/random.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace bertd {

namespace {
std::string random_bytes(size_t n) {
    std::string out(n, '\0');
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(out.data() + got, n - got, 0);
        if (r <= 0) throw std::runtime_error("getrandom: cannot draw the token for bertd's internal sockets");
        got += size_t(r);
    }
    return out;
}
}  // namespace

IpcNames IpcNames::create(pid_t master) {
    std::string raw = random_bytes(12);
    char hex[2 * 12 + 1];
    for (size_t i = 0; i < raw.size(); ++i) snprintf(hex + 2 * i, 3, "%02x", (unsigned char)raw[i]);
    IpcNames n;
    n.prefix_ = "bertd." + std::to_string(master) + "." + hex;
    n.secret_ = random_bytes(16);
    return n;
}

IpcNames IpcNames::from_prefix(std::string prefix) {
    IpcNames n;
    n.prefix_ = std::move(prefix);
    return n;
}

std::string IpcNames::handover(uint64_t generation) const {
    return prefix_ + ".handover." + std::to_string(generation);
}
std::string IpcNames::link() const { return prefix_ + ".link"; }
std::string IpcNames::link_handlers() const { return prefix_ + ".erlang"; }
std::string IpcNames::segment(uint64_t generation) const { return "/" + prefix_ + ".seg." + std::to_string(generation); }

bool IpcNames::parse_segment(const std::string& name, pid_t& master, uint64_t& generation) {
    // "/bertd.<pid>.<token>.seg.<generation>", or the same under /dev/shm.
    const char* p = strstr(name.c_str(), "bertd.");
    if (!p) return false;
    char* end = nullptr;
    long pid = strtol(p + 6, &end, 10);
    if (end == p + 6 || *end != '.' || pid <= 0) return false;
    const char* seg = strstr(end, ".seg.");
    if (!seg) return false;
    char* gend = nullptr;
    unsigned long long g = strtoull(seg + 5, &gend, 10);
    if (gend == seg + 5) return false;
    master = pid_t(pid);
    generation = g;
    return true;
}

std::string IpcNames::newest_segment(pid_t master) {
    std::string dir = "/proc/" + std::to_string(master) + "/fd";
    DIR* d = opendir(dir.c_str());
    if (!d) return {};
    std::string best;
    uint64_t best_gen = 0;
    while (dirent* e = readdir(d)) {
        char target[512];
        std::string link = dir + "/" + e->d_name;
        ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = 0;
        std::string t(target);
        if (t.rfind("/dev/shm/", 0) != 0) continue;
        pid_t owner;
        uint64_t gen;
        if (!parse_segment(t, owner, gen) || owner != master || gen < best_gen) continue;
        best_gen = gen;
        best = t.substr(std::string("/dev/shm").size());  // "/bertd...."
    }
    closedir(d);
    return best;
}

std::string IpcNames::segment_in_master(const std::string& name) {
    pid_t master;
    uint64_t gen;
    if (!parse_segment(name, master, gen)) return {};
    std::string dir = "/proc/" + std::to_string(master) + "/fd";
    std::string want = "/dev/shm" + name;
    DIR* d = opendir(dir.c_str());
    if (!d) return {};
    std::string found;
    while (dirent* e = readdir(d)) {
        char target[512];
        std::string link = dir + "/" + e->d_name;
        ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
        if (n <= 0) continue;
        std::string t(target, size_t(n));
        if (t == want || t == want + " (deleted)") {
            found = link;
            break;
        }
    }
    closedir(d);
    return found;
}

}  // namespace bertd
