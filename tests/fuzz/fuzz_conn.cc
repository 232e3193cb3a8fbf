// fuzz_conn.cc: libFuzzer target for the connection state machine. A real
// Acceptor runs in-process on its libevent loop; the fuzzer plays the client
// (bytes in chunks, half-close, reading), the handler worker (answers, garbage,
// half answers, silence, death) and the master (reaping and restarting the slot).
// Invariants: nothing crashes, every answer frame bertd writes is well framed, and
// once the client is gone and the worker has answered, no connection or lease is left.
#include <fuzzer/FuzzedDataProvider.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "bert/codec.h"
#include "bert/frame.h"
#include "core/runtime.h"
#include "net/acceptor.h"

namespace {

constexpr size_t kMaxFrame = 4096;

struct World {
    bertd::Runtime rt;
    std::unique_ptr<bertd::Acceptor> acc;
    int worker = -1;  // the worker's end of the module's one slot
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
        rt.listen_fd.reset(l);
        rt.acceptor_wake.emplace_back(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
        rt.master_wake.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
        w->acc = std::make_unique<bertd::Acceptor>(rt, 0);
        if (!w->acc->start(false)) abort();
        return w;
    }();
    return *w;
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

// Reads what bertd wrote to the client and checks its framing.
void read_client(int fd, std::string& in) {
    char buf[8192];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) break;
        in.append(buf, size_t(n));
    }
    for (;;) {
        bert::FrameScan s = bert::scan_frame(in, kMaxFrame);
        if (s.state == bert::FrameScan::State::TooLarge) abort();  // bertd never writes a frame over its limit
        if (s.state == bert::FrameScan::State::NeedMore) return;
        if (s.length == 0 || static_cast<unsigned char>(in[bert::kFrameHeader]) != bert::kVersion) abort();
        in.erase(0, bert::kFrameHeader + s.length);
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

// The worker: reads whole requests and answers each one as the fuzzer says.
void play_worker(World& w, FuzzedDataProvider& fdp, std::string& requests, bool obedient) {
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
        int how = obedient ? 0 : fdp.ConsumeIntegralInRange(0, 5);
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
        }
        [[maybe_unused]] ssize_t m = ::send(w.worker, out.data(), out.size(), MSG_NOSIGNAL);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    World& w = world();
    FuzzedDataProvider fdp(data, size);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return 0;
    int client = sv[0];
    w.acc->adopt(sv[1]);
    std::string answers, requests;
    bool open = true;
    while (fdp.remaining_bytes() > 0 && open) {
        switch (fdp.ConsumeIntegralInRange(0, 5)) {
            case 0:
            case 1: {  // the client writes a chunk
                std::string chunk = fdp.ConsumeRandomLengthString(512);
                [[maybe_unused]] ssize_t n = ::send(client, chunk.data(), chunk.size(), MSG_NOSIGNAL);
                break;
            }
            case 2: play_worker(w, fdp, requests, false); break;
            case 3: read_client(client, answers); break;
            case 4: shutdown(client, SHUT_WR); break;
            case 5: open = false; break;  // the client goes away
        }
        pump(w);
    }
    ::close(client);
    // Wind down: the worker answers whatever it still holds; everything must be released.
    for (int i = 0; i < 200 && (w.acc->open_connections() > 0 || w.acc->leases_held() > 0); ++i) {
        pump(w);
        play_worker(w, fdp, requests, true);
        if (w.acc->leases_held() > 0 && i > 100) {
            // A worker that said half an answer and then nothing: it dies, as the master would see.
            if (w.rt.seg->worker_died(0) == 0) wake_acceptor(w);
            requests.clear();
        }
    }
    pump(w);
    if (w.acc->open_connections() != 0 || w.acc->leases_held() != 0) abort();
    if (w.rt.seg->slot(0).state.load() != uint32_t(bertd::SlotState::Idle)) abort();
    return 0;
}
