// fuzz_conn.cc: libFuzzer target for the connection state machine. A real
// Acceptor runs in-process on its libevent loop; the fuzzer plays the client
// (bytes in chunks, half-close, reading, going away unseen), the handler worker (answers,
// garbage, half answers, silence, death, long streams) and the master (reaping and restarting the slot).
// Half the clients connect over TCP to a proxy_protocol listener and go through the PROXY
// gate first (with a valid header or whatever the fuzzer writes).
// Invariants: nothing crashes, every answer frame bertd writes is well framed, and
// once the client is gone and the worker has answered, no connection or lease is left.
#include <fuzzer/FuzzedDataProvider.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdlib>
#include <iterator>
#include <memory>
#include <string>

#include "bert/codec.h"
#include "bert/frame.h"
#include "core/runtime.h"
#include "net/acceptor.h"
#include "net/infos.h"

namespace {

constexpr size_t kMaxFrame = 4096;

struct World {
    bertd::Runtime rt;
    std::unique_ptr<bertd::Acceptor> acc;
    int worker = -1;  // the worker's end of the module's one slot
    sockaddr_in proxied{};  // where the proxy_protocol listener listens
};

World& world() {
    static World* w = [] {
        signal(SIGPIPE, SIG_IGN);
        auto* w = new World;
        bertd::Runtime& rt = w->rt;
        bertd::ModuleConfig m;
        m.name = "m";
        m.command = "unused";
        rt.config.modules.push_back(m);
        rt.config.limits.max_frame = kMaxFrame;
        rt.config.limits.max_queue = 4;
        rt.config.limits.idle_timeout = 0;
        rt.modules.push_back(bertd::ModuleRuntime{"m", 0, &rt.config.modules[0]});
        rt.module_index["m"] = 0;
        rt.seg = bertd::Segment::create("/bertd-fuzz." + std::to_string(getpid()), 1, 1, 1, 4);
        rt.seg->remove();  // mapped, nameless: nothing stays in /dev/shm however the fuzzer ends
        bertd::Segment& seg = *rt.seg;
        seg.header().master_pid = 0;  // no master: admin calls must not signal anyone
        seg.module(0).first_slot = 0;
        seg.module(0).nslots = 1;
        seg.slot(0).module = 0;
        seg.release(0);
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
        rt.slots.resize(1);
        rt.slots[0].server_end.reset(sv[0]);
        rt.slots[0].worker_end.reset(sv[1]);
        bertd::set_nonblocking(sv[0]);
        bertd::set_nonblocking(sv[1]);
        w->worker = sv[1];
        int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);  // never connected to
        listen(l, 1);
        rt.listeners.emplace_back().fd.reset(l);
        int p = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        w->proxied.sin_family = AF_INET;
        w->proxied.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t plen = sizeof w->proxied;
        if (bind(p, reinterpret_cast<sockaddr*>(&w->proxied), plen) != 0 || listen(p, 64) != 0) abort();
        getsockname(p, reinterpret_cast<sockaddr*>(&w->proxied), &plen);
        bertd::ListenRuntime& pl = rt.listeners.emplace_back();
        pl.fd.reset(p);
        pl.name = "fuzz-proxy";
        pl.proxy_protocol = true;
        rt.acceptor_wake.emplace_back(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
        rt.master_wake.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
        w->acc = std::make_unique<bertd::Acceptor>(rt, 0);
        if (!w->acc->start(false)) abort();
        return w;
    }();
    return *w;
}

// A blocking connect to the proxy listener. libFuzzer's SIGALRM (every timeout/2 + 1 s) may
// interrupt it: the handshake then goes on in the kernel, so wait for it rather than fail.
bool connect_to(int fd, const sockaddr_in& to) {
    if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) return true;
    if (errno != EINTR) return false;
    pollfd p{fd, POLLOUT, 0};
    while (poll(&p, 1, -1) < 0)
        if (errno != EINTR) return false;
    int err = 0;
    socklen_t len = sizeof err;
    return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
}

void wake_acceptor(World& w) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(w.rt.acceptor_wake[0].get(), &one, sizeof one);
}

// What the master does for a slot the acceptor gave up: drain it, "restart" it.
void play_master(World& w) {
    bertd::Segment& seg = *w.rt.seg;
    if (seg.slot(0).state.load() != uint32_t(bertd::SlotState::Reaping)) return;
    bertd::drain(w.rt.slots[0].server_end.get());
    bertd::drain(w.worker);
    seg.slot(0).retire = 0;
    if (seg.release(0) == 0) wake_acceptor(w);
}

void pump(World& w) {
    for (int i = 0; i < 4; ++i) {
        event_base_loop(w.acc->base(), EVLOOP_NONBLOCK);
        play_master(w);
    }
}

// What the client has read so far: whole frames, or a streamed answer's chunks (after
// {info, stream, []} and its reply, up to the zero header).
struct ClientReader {
    std::string in;
    int stream = 0;  // 0: frames; 1: the stream info came, its reply is next; 2: chunks
};

// Reads what bertd wrote to the client and checks its framing.
void read_client(int fd, ClientReader& c) {
    char buf[8192];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) break;
        c.in.append(buf, size_t(n));
    }
    for (;;) {
        bert::FrameScan s = bert::scan_frame(c.in, kMaxFrame);
        if (s.state == bert::FrameScan::State::TooLarge) abort();  // bertd never writes a frame over its limit
        if (s.state == bert::FrameScan::State::NeedMore) return;
        std::string_view payload = std::string_view(c.in).substr(bert::kFrameHeader, s.length);
        if (c.stream == 2) {
            if (s.length == 0) c.stream = 0;  // the end of the streamed answer
        } else {
            if (s.length == 0 || static_cast<unsigned char>(payload[0]) != bert::kVersion) abort();
            if (c.stream == 1) c.stream = 2;
            else if (bertd::classify_worker_frame(payload) == bertd::WorkerFrame::StreamInfo) c.stream = 1;
        }
        c.in.erase(0, bert::kFrameHeader + s.length);
    }
}

std::string framed(const bert::Term& t) {
    std::string out;
    bert::append_frame(out, bert::encode(t));
    return out;
}

// The frame of {call, m, f, [<<0, ... (zeros bytes)>>]} as a compressed term (tag 80).
std::string compressed_call(size_t zeros) {
    using bert::Term;
    std::string inner = bert::encode(Term::tuple(
        {Term::atom("call"), Term::atom("m"), Term::atom("f"), Term::list({Term::binary(std::string(zeros, 0))})}));
    uLongf len = compressBound(uLong(inner.size() - 1));
    std::string z(len, '\0');
    compress(reinterpret_cast<Bytef*>(z.data()), &len, reinterpret_cast<const Bytef*>(inner.data() + 1),
             uLong(inner.size() - 1));
    std::string payload = "\x83\x50";  // no NUL inside: a plain literal is whole
    uint32_t raw = uint32_t(inner.size() - 1);
    for (int i = 3; i >= 0; --i) payload.push_back(char(raw >> (8 * i)));
    payload.append(z.data(), len);
    std::string out;
    bert::append_frame(out, payload);
    return out;
}

// What a client may send that random bytes rarely hit: a streamed request, a stream and
// cache announcement, a compressed term that inflates, terms nested deeply.
std::string structured_client_bytes(FuzzedDataProvider& fdp) {
    using bert::Term;
    switch (fdp.ConsumeIntegralInRange(0, 3)) {
        case 0: {
            std::string out = framed(Term::tuple({Term::atom("info"), Term::atom("stream"), Term::nil()}));
            out += framed(Term::tuple({Term::atom("call"), Term::atom("m"), Term::atom("f"), Term::nil()}));
            for (int i = fdp.ConsumeIntegralInRange(0, 3); i > 0; --i) {
                std::string c = fdp.ConsumeRandomLengthString(kMaxFrame + 16);
                bert::append_frame(out, c);
            }
            if (fdp.ConsumeBool()) out.append(4, '\0');  // the end, or a stream cut short
            return out;
        }
        case 1:
            return framed(Term::tuple({Term::atom("info"), Term::atom("accept"),
                                       Term::list({Term::atom("stream"), Term::atom("cache")})}));
        case 2: {
            // {call, m, f, [<<zeros>>]} compressed (tag 80): far more inflated than sent.
            // The sizes bracket max_frame (the term is 29 bytes more than its binary) and go
            // far past it; each is compressed once, as zlib was most of a run's time.
            static const size_t sizes[] = {0, 1, kMaxFrame - 30, kMaxFrame - 29, kMaxFrame - 28,
                                           kMaxFrame, 1 << 16, 1 << 20};
            static std::string made[std::size(sizes)];
            size_t i = fdp.ConsumeIntegralInRange<size_t>(0, std::size(sizes) - 1);
            if (made[i].empty()) made[i] = compressed_call(sizes[i]);
            return made[i];
        }
        default: {
            // [[[[...]]]]: deeper than the decoder's depth limit, or not.
            int depth = fdp.ConsumeIntegralInRange(1, 3000);
            using namespace std::string_literals;
            std::string payload = "\x83\x68\x04\x64\x00\x04" "call" "\x64\x00\x01m\x64\x00\x01" "f"s;
            for (int i = 0; i < depth; ++i) payload += "\x6c\x00\x00\x00\x01"s;
            payload += "\x6a";
            for (int i = 0; i < depth; ++i) payload += "\x6a";
            std::string out;
            bert::append_frame(out, payload);
            return out;
        }
    }
}

const std::string& reply_frame() {
    static const std::string f = [] {
        std::string out;
        bert::append_frame(out, bert::encode(bert::Term::tuple({bert::Term::atom("reply"), bert::Term::atom("ok")})));
        return out;
    }();
    return f;
}

// A streamed answer longer than the acceptor reads at once (its 64 KiB scratch): the relay
// goes on within one read callback, past the moment a send finds the client gone.
std::string long_stream(FuzzedDataProvider& fdp) {
    std::string out = framed(bert::Term::tuple({bert::Term::atom("info"), bert::Term::atom("stream"), bert::Term::nil()}));
    out += reply_frame();
    for (int i = fdp.ConsumeIntegralInRange(17, 20); i > 0; --i)  // within the socket buffer
        bert::append_frame(out, std::string(kMaxFrame, char('a' + i % 26)));
    out.append(4, '\0');
    return out;
}

enum class Worker { AsTheFuzzerSays, Obedient, Streams };

// The worker: reads whole requests and answers each one as the fuzzer says.
void play_worker(World& w, FuzzedDataProvider& fdp, std::string& requests, Worker mode) {
    char buf[8192];
    for (;;) {
        ssize_t n = ::recv(w.worker, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) break;
        requests.append(buf, size_t(n));
    }
    for (;;) {
        bert::FrameScan s = bert::scan_frame(requests, 1u << 30);
        if (s.state != bert::FrameScan::State::Complete) return;
        requests.erase(0, bert::kFrameHeader + s.length);
        int how = mode == Worker::Obedient ? 0 : mode == Worker::Streams ? 8 : fdp.ConsumeIntegralInRange(0, 7);
        std::string out;
        switch (how) {
            case 0: out = reply_frame(); break;
            case 1: bert::append_frame(out, fdp.ConsumeRandomLengthString(64)); break;  // garbage answer
            case 2: out = reply_frame().substr(0, 5); break;                           // half an answer
            case 3: out = reply_frame() + reply_frame(); break;                        // one too many
            case 4: {                                                                  // the worker dies
                if (w.rt.seg->worker_died(0) == 0) wake_acceptor(w);
                requests.clear();
                return;
            }
            case 5: break;  // silence (the request stays unanswered for now)
            case 6: {       // a streamed answer, cut short or not
                out = framed(bert::Term::tuple({bert::Term::atom("info"), bert::Term::atom("stream"),
                                                bert::Term::nil()}));
                out += reply_frame();
                for (int i = fdp.ConsumeIntegralInRange(0, 3); i > 0; --i)
                    bert::append_frame(out, fdp.ConsumeRandomLengthString(kMaxFrame + 16));
                if (fdp.ConsumeBool()) out.append(4, '\0');
                break;
            }
            case 7:  // a cache info, then the answer
                out = framed(bert::Term::tuple(
                    {bert::Term::atom("info"), bert::Term::atom("cache"),
                     bert::Term::list({bert::Term::tuple({bert::Term::atom("access"), bert::Term::atom("public")}),
                                       bert::Term::tuple({bert::Term::atom("expiration"), bert::Term(60)})})}));
                out += reply_frame();
                break;
            case 8: out = long_stream(fdp); break;
        }
        [[maybe_unused]] ssize_t m = ::send(w.worker, out.data(), out.size(), MSG_NOSIGNAL);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    World& w = world();
    FuzzedDataProvider fdp(data, size);
    int client = -1;
    if (fdp.ConsumeBool()) {  // through the PROXY gate
        client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (!connect_to(client, w.proxied)) abort();
        bertd::set_nonblocking(client);
        if (fdp.ConsumeBool()) {
            static const char v1[] = "PROXY TCP4 192.0.2.7 127.0.0.1 56324 8000\r\n";
            [[maybe_unused]] ssize_t n = ::send(client, v1, sizeof v1 - 1, MSG_NOSIGNAL);
        }
    } else {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return 0;
        client = sv[0];
        w.acc->adopt(sv[1]);
    }
    ClientReader answers;
    std::string requests;
    bool open = true;
    while (fdp.remaining_bytes() > 0 && open) {
        switch (fdp.ConsumeIntegralInRange(0, 7)) {
            case 6: {  // the client writes something structured
                std::string bytes = structured_client_bytes(fdp);
                [[maybe_unused]] ssize_t n = ::send(client, bytes.data(), bytes.size(), MSG_NOSIGNAL);
                break;
            }
            case 0:
            case 1: {  // the client writes a chunk
                std::string chunk = fdp.ConsumeRandomLengthString(512);
                [[maybe_unused]] ssize_t n = ::send(client, chunk.data(), chunk.size(), MSG_NOSIGNAL);
                break;
            }
            case 2: play_worker(w, fdp, requests, Worker::AsTheFuzzerSays); break;
            case 3: read_client(client, answers); break;
            case 4: shutdown(client, SHUT_WR); break;
            case 5: open = false; break;  // the client goes away
            case 7:  // ... and its worker streams before bertd has seen it go
                ::close(client);
                client = -1;
                play_worker(w, fdp, requests, Worker::Streams);
                open = false;
                break;
        }
        pump(w);
    }
    if (client >= 0) ::close(client);
    // Wind down: the worker answers whatever it still holds; everything must be released.
    std::atomic<uint64_t>& active = w.rt.seg->header().stats.connections_active;  // the gate's count too
    for (int i = 0;
         i < 200 && (w.acc->open_connections() > 0 || w.acc->leases_held() > 0 || active.load() > 0); ++i) {
        pump(w);
        play_worker(w, fdp, requests, Worker::Obedient);
        if (w.acc->leases_held() > 0 && i > 100) {
            // A worker that said half an answer and then nothing: it dies, as the master would see.
            if (w.rt.seg->worker_died(0) == 0) wake_acceptor(w);
            requests.clear();
        }
    }
    pump(w);
    if (w.acc->open_connections() != 0 || w.acc->leases_held() != 0 || active.load() != 0) abort();
    if (w.acc->buffered() != 0) abort();  // every byte held for the client is accounted for, and gone
    if (w.rt.seg->slot(0).state.load() != uint32_t(bertd::SlotState::Idle)) abort();
    return 0;
}
