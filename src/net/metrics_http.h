// metrics_http.h: the `metrics: {listen: ...}` socket in an acceptor: a minimal HTTP/1.x
// server for one thing, GET /metrics (admin/metrics.h), one answer per connection. A
// request is at most 8 KiB and must come within 5 s; at most a few scrapes are served at
// once per acceptor, and at most 20 a second (more wait in the listen backlog), so a flood
// of them cannot take the loop from BERT-RPC clients.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "io/event.h"
#include "io/fd.h"

namespace bertd {

class Acceptor;

class MetricsHttp {
public:
    MetricsHttp(Acceptor& a, int listen_fd);
    ~MetricsHttp();
    MetricsHttp(const MetricsHttp&) = delete;
    MetricsHttp& operator=(const MetricsHttp&) = delete;

    void stop();  // no more scrapes: stops accepting, drops those under way

private:
    struct Scrape {
        MetricsHttp* self = nullptr;
        uint64_t key = 0;
        Fd fd;
        EventPtr ev;
        std::string in, out;
        size_t out_at = 0;
        int64_t deadline_us = 0;
    };
    static void on_accept(evutil_socket_t, short, void*);
    static void on_scrape(evutil_socket_t, short, void*);
    static void on_resume(evutil_socket_t, short, void*);
    bool take_token();  // false: the second's scrapes are spent; accepting pauses until the next
    void accept_ready();
    void read(Scrape& s);
    void answer(Scrape& s, const std::string& request_line);
    void write(Scrape& s);
    void arm(Scrape& s, short what);
    void done(Scrape& s);  // s is gone after it

    Acceptor& acc_;
    int listen_fd_;
    EventPtr accept_ev_, resume_ev_;
    double tokens_;
    int64_t refilled_us_;
    uint64_t next_ = 1;
    std::unordered_map<uint64_t, std::unique_ptr<Scrape>> scrapes_;
    // A flood of scrapes is answered from one rendering per 100 ms, not one each.
    std::string rendered_;
    int64_t rendered_at_us_ = 0;
};

}  // namespace bertd
