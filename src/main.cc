// main.cc: bertd's entry point: parse the command line, load and check the
// config, then either start the master or send a command to a running server.
// Start-up errors are exceptions caught here and printed with what to fix.
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/printer.h"
#include "core/cli.h"
#include "core/config.h"
#include "core/master.h"
#include "log/log.h"

using namespace bertd;

namespace {

// Sends {call, '__admin__', Fn, []} to a running server and prints the answer.
int run_command(const Options& o, int port, const char* function) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string p = std::to_string(port);
    if (getaddrinfo(o.host.c_str(), p.c_str(), &hints, &res) != 0) {
        fprintf(stderr, "bertd: cannot resolve '%s'\n", o.host.c_str());
        return 1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "bertd: no server answers on %s port %d: %s\n", o.host.c_str(), port, strerror(errno));
        freeaddrinfo(res);
        return 1;
    }
    freeaddrinfo(res);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string frame;
    std::string payload = bert::encode(bert::Term::tuple(
        {bert::Term::atom("call"), bert::Term::atom("__admin__"), bert::Term::atom(function), bert::Term::nil()}));
    bert::append_frame(frame, payload);
    if (::write(fd, frame.data(), frame.size()) != ssize_t(frame.size())) {
        fprintf(stderr, "bertd: cannot send the command: %s\n", strerror(errno));
        ::close(fd);
        return 1;
    }
    std::string in;
    char buf[65536];
    for (;;) {
        auto fs = bert::scan_frame(in, 64u << 20);
        if (fs.state == bert::FrameScan::State::Complete) break;
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) {
            fprintf(stderr, "bertd: the server closed the connection without an answer\n");
            ::close(fd);
            return 1;
        }
        in.append(buf, size_t(n));
    }
    ::close(fd);
    auto fs = bert::scan_frame(in, 64u << 20);
    bert::Term t;
    if (auto err = bert::decode(std::string_view(in).substr(4, fs.length), t)) {
        fprintf(stderr, "bertd: unreadable answer: %s\n", err.message.c_str());
        return 1;
    }
    if (t.is_tuple(2) && t[0].is_atom("reply")) {
        if (t[1].is_binary()) fputs(t[1].bytes().c_str(), stdout);
        else printf("%s\n", bert::to_string(t[1]).c_str());
        return 0;
    }
    if (t.is_tuple(2) && t[0].is_atom("error") && t[1].is_tuple(5) && t[1][3].is_binary()) {
        fprintf(stderr, "bertd: %s\n", t[1][3].bytes().c_str());
        return 1;
    }
    fprintf(stderr, "bertd: unexpected answer %s\n", bert::to_string(t).c_str());
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    Options opts;
    try {
        opts = parse_options(argc, argv);
    } catch (const UsageError& e) {
        fprintf(stderr, "bertd: %s\n\n%s", e.what(), usage_text().c_str());
        return 2;
    }
    if (opts.command == Options::Command::Help) {
        fputs(usage_text().c_str(), stdout);
        return 0;
    }
    if (opts.command == Options::Command::Version) {
        fputs(version_text().c_str(), stdout);
        return 0;
    }

    Config config;
    if (!opts.config.empty()) {
        try {
            config = load_config(opts.config);
        } catch (const ConfigError& e) {
            fprintf(stderr, "bertd: %s\n", e.what());
            return 1;
        }
    }
    if (opts.port >= 0) config.port = opts.port;
    if (opts.log_level >= 0) config.log_level = opts.log_level;
    if (!opts.access_log.empty()) config.access_log = opts.access_log;
    if (!opts.pidfile.empty()) config.pidfile = opts.pidfile;

    switch (opts.command) {
        case Options::Command::Stats: return run_command(opts, config.port, "stats");
        case Options::Command::ReloadHandlers: return run_command(opts, config.port, "reload_handlers");
        case Options::Command::Halt: return run_command(opts, config.port, "halt");
        default: break;
    }
    if (opts.test_config) {
        printf("bertd: the configuration file %s syntax is ok (%zu modules)\n", opts.config.c_str(),
               config.modules.size());
        return 0;
    }

    log::init(config.error_log, config.log_level, "master");
    try {
        Master m(opts, std::move(config));
        return m.run();
    } catch (const std::exception& e) {
        fprintf(stderr, "bertd: %s\n", e.what());
        log::error("%s", e.what());
        return 1;
    }
}
