// metrics_http.cc: accepting scrapes, reading one request head, answering it whole
// (metrics_http.h). Errors are HTTP answers (400, 404, 405, 431, 503) and a close; nothing
// here blocks, and nothing a scraper sends is kept past its connection.
#include "net/metrics_http.h"

#include <errno.h>
#include <sys/socket.h>

#include <algorithm>

#include "admin/metrics.h"
#include "io/clock.h"
#include "io/unix.h"
#include "net/acceptor.h"
#include "net/link_client.h"

namespace bertd {

namespace {
constexpr size_t kMaxRequest = 8192;
constexpr size_t kMaxScrapes = 8;  // at once, per acceptor
constexpr int64_t kTimeoutUs = 5'000'000;
constexpr int64_t kFreshUs = 100'000;  // how old an exposition may be when it is sent
// Scrapes accepted a second, per acceptor, in bursts of at most kMaxScrapes: Prometheus
// scrapes every few seconds; past that, connections wait in the kernel's backlog, and an
// acceptor spends no more on them than 20 renderings' worth a second.
constexpr double kScrapesPerSecond = 20;

std::string http(const char* status, const std::string& type, const std::string& body) {
    return std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + type +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

std::string plain(const char* status, const std::string& text) {
    return http(status, "text/plain; charset=utf-8", text + "\n");
}
}  // namespace

MetricsHttp::MetricsHttp(Acceptor& a, int listen_fd)
    : acc_(a), listen_fd_(listen_fd), tokens_(kMaxScrapes), refilled_us_(monotonic_us()) {
    accept_ev_ = make_event(a.base(), listen_fd, EV_READ | EV_PERSIST, on_accept, this);
    resume_ev_ = make_event(a.base(), -1, 0, on_resume, this);
    event_add(accept_ev_.get(), nullptr);
}

MetricsHttp::~MetricsHttp() = default;

void MetricsHttp::stop() {
    event_del(accept_ev_.get());
    event_del(resume_ev_.get());
    scrapes_.clear();
}

void MetricsHttp::on_accept(evutil_socket_t, short, void* arg) {
    static_cast<MetricsHttp*>(arg)->accept_ready();
}

void MetricsHttp::on_resume(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<MetricsHttp*>(arg);
    event_add(self->accept_ev_.get(), nullptr);
    self->accept_ready();
}

bool MetricsHttp::take_token() {
    int64_t now = monotonic_us();
    tokens_ = std::min<double>(kMaxScrapes, tokens_ + double(now - refilled_us_) * kScrapesPerSecond / 1e6);
    refilled_us_ = now;
    if (tokens_ >= 1) {
        tokens_ -= 1;
        return true;
    }
    event_del(accept_ev_.get());
    int64_t wait = int64_t((1 - tokens_) * 1e6 / kScrapesPerSecond) + 1;
    timeval tv{0, suseconds_t(wait)};
    event_add(resume_ev_.get(), &tv);
    return false;
}

void MetricsHttp::accept_ready() {
    for (int i = 0; i < 16; ++i) {
        if (!take_token()) return;
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            tokens_ += 1;  // nothing taken: EAGAIN (another acceptor took it), or out of descriptors
            return;
        }
        if (scrapes_.size() >= kMaxScrapes) {
            std::string busy = plain("503 Service Unavailable", "too many scrapes at once");
            [[maybe_unused]] ssize_t n = ::send(fd, busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            ::close(fd);
            continue;
        }
        auto s = std::make_unique<Scrape>();
        s->self = this;
        s->key = next_++;
        s->fd.reset(fd);
        s->deadline_us = monotonic_us() + kTimeoutUs;
        s->ev = make_event(acc_.base(), fd, EV_READ, on_scrape, s.get());
        Scrape& ref = *s;
        scrapes_.emplace(s->key, std::move(s));
        read(ref);
    }
}

void MetricsHttp::on_scrape(evutil_socket_t, short what, void* arg) {
    Scrape& s = *static_cast<Scrape*>(arg);
    MetricsHttp& self = *s.self;
    if ((what & EV_TIMEOUT) && monotonic_us() >= s.deadline_us) return self.done(s);
    if (s.out.empty())
        self.read(s);
    else
        self.write(s);
}

void MetricsHttp::arm(Scrape& s, short what) {
    event_del(s.ev.get());
    event_assign(s.ev.get(), acc_.base(), s.fd.get(), what, on_scrape, &s);
    int64_t left = std::max<int64_t>(s.deadline_us - monotonic_us(), 1000);
    timeval tv{time_t(left / 1'000'000), suseconds_t(left % 1'000'000)};
    event_add(s.ev.get(), &tv);
}

void MetricsHttp::read(Scrape& s) {
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(s.fd.get(), buf, std::min(sizeof buf, kMaxRequest + 1 - s.in.size()), 0);
        if (n > 0) {
            s.in.append(buf, size_t(n));
            if (s.in.size() > kMaxRequest) break;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        return done(s);  // closed before a whole request
    }
    size_t end = s.in.find("\r\n\r\n");
    if (end == std::string::npos) end = s.in.find("\n\n");
    if (end == std::string::npos) {
        if (s.in.size() > kMaxRequest) {
            s.out = plain("431 Request Header Fields Too Large", "a request head of at most 8 KiB");
            return write(s);
        }
        return arm(s, EV_READ);
    }
    size_t eol = s.in.find_first_of("\r\n");
    answer(s, s.in.substr(0, eol));
}

void MetricsHttp::answer(Scrape& s, const std::string& line) {
    size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp2 == sp1 || line.compare(sp2 + 1, 5, "HTTP/") != 0) {
        s.out = plain("400 Bad Request", "not an HTTP request line");
    } else {
        std::string method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
        std::string path = target.substr(0, target.find('?'));
        if (method != "GET" && method != "HEAD") {
            s.out = plain("405 Method Not Allowed", "only GET /metrics");
        } else if (path != "/metrics") {
            s.out = plain("404 Not Found", "bertd serves /metrics only");
        } else {
            int64_t now = monotonic_us();
            if (rendered_.empty() || now - rendered_at_us_ >= kFreshUs) {
                rendered_ = http("200 OK", "text/plain; version=0.0.4; charset=utf-8",
                                 admin::metrics_text(acc_.seg(), acc_.link().down()));
                rendered_at_us_ = now;
            }
            s.out = rendered_;
            if (method == "HEAD") s.out.resize(s.out.find("\r\n\r\n") + 4);
        }
    }
    s.in.clear();
    write(s);
}

void MetricsHttp::write(Scrape& s) {
    switch (send_some(s.fd.get(), s.out, s.out_at)) {
        case Flush::Blocked: return arm(s, EV_WRITE);
        case Flush::Failed: return done(s);
        case Flush::Done: break;
    }
    ::shutdown(s.fd.get(), SHUT_WR);
    done(s);
}

void MetricsHttp::done(Scrape& s) {
    // Erased from inside its own callback (or a call it made): nothing of it is used after.
    scrapes_.erase(s.key);
}

}  // namespace bertd
