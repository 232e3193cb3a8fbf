// bert_bounds: measures what hostile shapes cost the codec: the time and the peak
// memory (above what was resident before) of decode(), check() and
// print_encoded() on the frames of issue 12 and on a few worst cases, and of
// rewrite_floats() on frames full of floats. It only
// prints figures (for the lead's report and BENCHMARKS.md); it judges nothing.
// Each figure is the fastest of three runs, each in a forked child; peak is the
// largest rise of the child's resident memory.
// Usage: bert_bounds [CASE...] (default: all). Linux only (VmHWM, clear_refs).
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "bert/codec.h"
#include "bert/printer.h"

namespace {

long status_kb(const char* key) {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(key, 0) == 0) return std::stol(line.substr(line.find(':') + 1));
    return -1;
}

void put32(std::string& s, uint32_t v) {
    for (int k = 3; k >= 0; --k) s.push_back(static_cast<char>(v >> (8 * k)));
}

std::string nil_list(size_t n) {
    std::string s(1, char(108));
    put32(s, uint32_t(n));
    s.append(n, char(106));
    s.push_back(char(106));
    return s;
}

std::string atom(const char* a) { return std::string{char(100), 0, char(std::strlen(a))} + a; }

std::string compressed(const std::string& inner) {
    uLongf n = compressBound(inner.size());
    std::string z(n, '\0');
    compress2(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(inner.data()),
              inner.size(), 9);
    z.resize(n);
    std::string out = {char(131), char(80)};
    put32(out, uint32_t(inner.size()));
    return out + z;
}

// A map of n small-integer keys to [], keys in descending order on the wire (as a
// hash order or a careless client may send them).
std::string unsorted_map(size_t n) {
    std::string s = {char(131), char(116)};
    put32(s, uint32_t(n));
    for (size_t i = n; i-- > 0;) {
        s.push_back(char(98));
        put32(s, uint32_t(i));
        s.push_back(char(106));
    }
    return s;
}

// A map of `width` pairs whose keys are maps built the same way, `depth` levels
// down to small integers, each map's keys in descending order on the wire. Keys
// that are maps are compared by value, so checking their uniqueness looks inside
// them at every level (issue 11's slow fuzz unit had this shape).
std::string nested_key_map(int depth, int width, uint32_t& next) {
    std::string s(1, char(116));
    put32(s, uint32_t(width));
    std::vector<std::string> keys;
    for (int i = 0; i < width; ++i) {
        if (depth == 0) {
            std::string k(1, char(98));
            put32(k, next++);
            keys.push_back(k);
        } else {
            keys.push_back(nested_key_map(depth - 1, width, next));
        }
    }
    for (size_t i = keys.size(); i-- > 0;) s += keys[i] + char(106);
    return s;
}

// The same shape made to cost most: sibling keys are equal but for their last key,
// down to the last integer, so each comparison of two keys walks nearly all of both.
std::string alike_key_map(int depth, int width, uint32_t v) {
    if (depth < 0) {
        std::string k(1, char(98));
        put32(k, v);
        return k;
    }
    std::string s(1, char(116));
    put32(s, uint32_t(width));
    for (int i = width; i-- > 0;)
        s += alike_key_map(depth - 1, width, i == width - 1 ? uint32_t(i) + v : uint32_t(i)) + char(106);
    return s;
}

// Runs `run` three times, each in a child of its own so that its peak memory is
// its own (the allocator keeps what earlier runs freed); prints the fastest.
void measure(const char* what, size_t input, const std::function<std::string()>& run) {
    double best_ms = 1e300;
    long best_peak = 0;
    std::string result;
    for (int k = 0; k < 3; ++k) {
        int fds[2];
        if (pipe(fds) != 0) return;
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            malloc_trim(0);  // memory freed while building the input must fault in again to count
            long rss = status_kb("VmRSS:");
            std::ofstream("/proc/self/clear_refs") << "5";  // VmHWM back to the current RSS
            auto t0 = std::chrono::steady_clock::now();
            std::string r = run();
            double ms =
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            long peak = status_kb("VmHWM:") - rss;
            std::string line = std::to_string(ms) + " " + std::to_string(peak) + " " + r.substr(0, 50);
            (void)!write(fds[1], line.data(), line.size());
            _exit(0);
        }
        close(fds[1]);
        char buf[256];
        ssize_t n = read(fds[0], buf, sizeof buf - 1);
        close(fds[0]);
        waitpid(pid, nullptr, 0);
        if (n <= 0) continue;
        buf[n] = '\0';
        double ms = std::strtod(buf, nullptr);
        char* rest = std::strchr(buf, ' ');
        long peak = std::strtol(rest + 1, &rest, 10);
        if (ms < best_ms) best_ms = ms;
        best_peak = std::max(best_peak, peak);
        result = rest + 1;
    }
    std::printf("%-44s %9zu B %9.1f ms %8ld KiB  %.50s\n", what, input, best_ms, best_peak, result.c_str());
}

std::string decode_of(const std::string& bytes, const bert::Limits& limits = {}) {
    bert::Term t;
    bert::DecodeError e = bert::decode(bytes, t, limits);
    return e ? "refused: " + e.message : "decoded";
}

std::string check_of(const std::string& bytes) {
    bert::DecodeError e = bert::check(bytes);
    return e ? "refused: " + e.message : "checks";
}

std::string print_of(const std::string& bytes, const bert::Limits& limits = {}) {
    std::string out;
    bert::DecodeError e = bert::print_encoded(bytes, out, 4096, limits);
    return e ? "refused: " + e.message : out;
}

std::string rewrite_of(const std::string& bytes, bert::FloatForm to) {
    std::string out;
    size_t n = 0;
    bert::DecodeError e = bert::rewrite_floats(bytes, to, out, {}, &n);
    return e ? "refused: " + e.message : std::to_string(n) + " floats, " + std::to_string(out.size()) + " B";
}

// A list of n copies of the float `one` (its bytes without the version byte).
std::string float_list(size_t n, const std::string& one) {
    std::string s = {char(131), char(108)};
    put32(s, uint32_t(n));
    for (size_t i = 0; i < n; ++i) s += one;
    s.push_back(char(106));
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> only(argv + 1, argv + argc);
    auto wanted = [&](const char* name) {
        if (only.empty()) return true;
        for (const auto& o : only)
            if (o == name) return true;
        return false;
    };
    std::printf("%-44s %11s %12s %12s  %s\n", "case", "input", "time", "peak", "result");
    if (wanted("nils")) {
        std::string big = std::string(1, char(131)) + nil_list(16u << 20);
        measure("16M NILs: decode", big.size(), [&] { return decode_of(big); });
        measure("16M NILs: check", big.size(), [&] { return check_of(big); });
        measure("16M NILs: print_encoded to 4 KiB", big.size(), [&] { return print_of(big); });
    }
    if (wanted("bomb")) {
        std::string bomb = compressed(nil_list(16u << 20));
        measure("compressed 16M NILs: decode", bomb.size(), [&] { return decode_of(bomb); });
        measure("compressed 16M NILs: print_encoded to 4 KiB", bomb.size(), [&] { return print_of(bomb); });
        bert::Limits loose;  // as if the limits were raised: the cut print inflates only what it shows
        loose.max_inflated = 32u << 20;
        loose.max_expansion = 100000;
        measure("  same, limits raised: print_encoded", bomb.size(), [&] { return print_of(bomb, loose); });
    }
    if (wanted("call")) {
        std::string call = std::string{char(131), char(104), char(4)} + atom("call") + atom("m") + atom("f") +
                           nil_list(4u << 20);
        measure("call with 4M NILs: decode", call.size(), [&] { return decode_of(call); });
        measure("call with 4M NILs: print_encoded to 4 KiB", call.size(), [&] { return print_of(call); });
    }
    if (wanted("map")) {
        std::string map = unsorted_map(3u << 20);  // 18 MB
        measure("3M keys out of order: print_encoded to 4 KiB", map.size(), [&] { return print_of(map); });
        measure("3M keys out of order: check", map.size(), [&] { return check_of(map); });
    }
    if (wanted("mapkeys")) {
        for (int depth : {3, 5, 7}) {
            uint32_t next = 0;
            std::string keys = std::string(1, char(131)) + nested_key_map(depth, 4, next);
            std::string what = "maps as keys, 4 wide, " + std::to_string(depth) + " deep: ";
            measure((what + "decode").c_str(), keys.size(), [&] { return decode_of(keys); });
            measure((what + "check").c_str(), keys.size(), [&] { return check_of(keys); });
        }
        for (auto [depth, width] : {std::pair{7, 4}, std::pair{12, 2}, std::pair{15, 2}}) {
            std::string keys = std::string(1, char(131)) + alike_key_map(depth - 1, width, 0);
            std::string what = "keys alike but the last, " + std::to_string(width) + " wide, " +
                               std::to_string(depth) + " deep: ";
            measure((what + "decode").c_str(), keys.size(), [&] { return decode_of(keys); });
            measure((what + "check").c_str(), keys.size(), [&] { return check_of(keys); });
            bert::Term t;
            if (bert::decode(keys, t)) continue;
            // What a decoded term costs again when it is written out or printed whole.
            measure((what + "encode").c_str(), keys.size(),
                    [&] { return std::to_string(bert::encode(t).size()) + " B"; });
            measure((what + "print").c_str(), keys.size(), [&] {
                std::string out;
                bert::print(t, out);
                return std::to_string(out.size()) + " chars";
            });
        }
    }
    if (wanted("deep")) {
        std::string deep(1, char(131));
        for (int i = 0; i < 999; ++i) deep += std::string{char(104), char(1)};
        deep += nil_list(16u << 20);
        measure("999 tuples around 16M NILs: print_encoded", deep.size(), [&] { return print_of(deep); });
    }
    if (wanted("floats")) {
        std::string plain = float_list(1u << 20, bert::encode(bert::Term(-1.25e-7)).substr(1));
        std::string ernie =
            float_list(1u << 20, bert::encode(bert::Term(-1.25e-7), {bert::FloatForm::Ernie}).substr(1));
        measure("1M NEW_FLOATs: rewrite_floats to FLOAT_EXT", plain.size(),
                [&] { return rewrite_of(plain, bert::FloatForm::Ernie); });
        measure("1M FLOAT_EXTs: rewrite_floats to NEW_FLOAT", ernie.size(),
                [&] { return rewrite_of(ernie, bert::FloatForm::New); });
        std::string big = std::string(1, char(131)) + nil_list(16u << 20);
        measure("16M NILs: rewrite_floats (copied)", big.size(),
                [&] { return rewrite_of(big, bert::FloatForm::Ernie); });
    }
    return 0;
}
