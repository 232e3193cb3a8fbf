// segment.h: the shared-memory segment of one server generation: worker slots,
// per-module high/low queues, stats and access-log state. Fixed-size records,
// indices not pointers, and robust locks, so a process killed mid-update cannot
// wedge the others. It never does I/O beyond creating and mapping the segment.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/clock.h"

namespace bertd {

class AnswerCache;

// A process-shared, robust mutex: if its holder dies, the next locker takes it over.
class RobustMutex {
public:
    void init();
    void lock();
    void unlock() { pthread_mutex_unlock(&m_); }

private:
    pthread_mutex_t m_;
};

class LockGuard {
public:
    explicit LockGuard(RobustMutex& m) : m_(m) { m_.lock(); }
    ~LockGuard() { m_.unlock(); }
    LockGuard(const LockGuard&) = delete;
    LockGuard& operator=(const LockGuard&) = delete;

private:
    RobustMutex& m_;
};

enum class SlotState : uint32_t {
    Idle = 0,     // worker running, nobody talking to it
    Leased = 1,   // an acceptor (owner) has a request on it
    Dead = 2,     // the worker died while leased; the owner must fail the request and give it up
    Reaping = 3,  // the master drains the slot's bytes and starts a new worker
    Stopped = 4,  // shutting down; never leased again
};

struct Slot {
    std::atomic<uint32_t> state;
    // Written under the module lock; read without it only as a hint.
    std::atomic<int32_t> owner;  // acceptor index holding the lease, -1 if none
    // The acceptor that held it last: it is offered the slot first when idle, and may still
    // have the slot's socket registered (no epoll_ctl for its next request, leases.cc).
    std::atomic<int32_t> last_owner;
    std::atomic<uint64_t> request;  // the request (an acceptor's id) the lease was granted for
    std::atomic<int32_t> pid;
    uint32_t module;
    std::atomic<uint32_t> retire;  // replace the worker once its current request is done
    std::atomic<uint64_t> served;
    std::atomic<uint64_t> restarts;
    std::atomic<int64_t> started_us;  // when the current worker was started
    // Bumped by the master each time the slot gets a fresh socketpair (a new worker): an
    // acceptor whose socket for the slot is older reads its control socket first.
    std::atomic<uint64_t> epoch;
    // The process that answers for the worker: its pid, or for a shell command that forks
    // (`cd /srv && ruby h.rb`) the descendant that wrote its first answer. 0 until then.
    std::atomic<int32_t> answerer;
};

struct QueueEntry {
    int32_t acceptor;
    uint64_t request;
    int64_t enqueued_us;
};

struct Ring {
    uint32_t head;   // index of the oldest entry
    uint32_t count;
};

constexpr int kErrorTypes = 4;  // protocol, server, user, proxy
// Messages from Erlang that the link dropped, by reason (erl/drops.h keeps the order).
constexpr int kErlangDropKinds = 4;
inline constexpr const char* kErlangDropNames[kErlangDropKinds] = {"unregistered", "dead_pid", "undecodable",
                                                                   "queue_full"};
// Messages Erlang nodes sent bertd's node, by what they were for: calls into bertd (erpc's spawn
// requests and rex: rpc:call, rpc:cast, ei_rpc), messages to a registered name, and messages to a
// worker's pid. Counted on arrival, delivered or not (the drops count those that were not).
constexpr int kErlangMessageKinds = 3;
inline constexpr const char* kErlangMessageNames[kErlangMessageKinds] = {"rpc", "name", "pid"};
constexpr int kLatencyBuckets = 128;

// Log-linear latency buckets in microseconds: 4 sub-buckets per power of two.
int latency_bucket(uint64_t us);
uint64_t latency_bucket_upper(int bucket);

struct Histogram {
    std::atomic<uint64_t> buckets[kLatencyBuckets];
    std::atomic<uint64_t> sum_us;  // of every value recorded (Prometheus's _sum)
    void record(uint64_t us) {
        buckets[latency_bucket(us)].fetch_add(1, std::memory_order_relaxed);
        sum_us.fetch_add(us, std::memory_order_relaxed);
    }
    uint64_t percentile(double p) const;  // upper bound of the bucket holding the p-th value; 0 if empty
};

constexpr int kHigh = 0, kLow = 1;  // the priorities, as ModuleStats indexes them

struct ModuleStats {
    std::atomic<uint64_t> requests[2];              // finished requests (calls and casts), by priority
    std::atomic<uint64_t> errors[2][kErrorTypes];   // by priority and error type
    std::atomic<uint64_t> queued_high, queued_low;  // requests that had to wait
    Histogram latency;
    uint64_t all_requests() const {
        return requests[kHigh].load(std::memory_order_relaxed) +
               requests[kLow].load(std::memory_order_relaxed);
    }
    uint64_t all_errors(int type) const {
        return errors[kHigh][type].load(std::memory_order_relaxed) +
               errors[kLow][type].load(std::memory_order_relaxed);
    }
};

// Why a module's workers keep dying young, in the master's words (empty while they
// live). The master writes it; anyone reads it through Segment::module_failure, under
// a sequence count (odd while a write is under way), so no reader takes a lock.
struct FailureNote {
    std::atomic<uint32_t> seq;
    char text[480];
};

struct ModuleShared {
    RobustMutex lock;  // guards this module's slots and queues
    uint32_t first_slot, nslots;
    uint32_t queue_base;  // index of this module's first queue entry (high ring, then low ring)
    Ring high, low;
    ModuleStats stats;
    char name[256];
    FailureNote failure;
    uint64_t cache_offset, cache_bytes;  // its answer cache's region in the segment (0 bytes: none)
};

struct AcceptorShared {
    std::atomic<int32_t> pid;
    std::atomic<uint64_t> incarnation;  // bumped each time the acceptor is (re)started
    std::atomic<uint64_t> connections;  // open now
};

struct GlobalStats {
    std::atomic<uint64_t> connections_total, connections_completed, connections_active, connections_refused;
    std::atomic<uint64_t> protocol_errors;  // before any module was known
    std::atomic<uint64_t> unknown_module;   // calls to modules that do not exist
    std::atomic<uint64_t> access_log_lost;  // lines not written whole (full disk, I/O errors)
    std::atomic<uint64_t> callbacks_ok, callbacks_failed;  // BERT-RPC 1.0 callback casts delivered or given up
    std::atomic<uint64_t> streams_in, streams_out;         // streamed requests and answers relayed
    std::atomic<uint64_t> acceptor_restarts, worker_restarts;
    std::atomic<int64_t> started_us;
    std::atomic<uint64_t> generation;
    std::atomic<uint64_t> erlang_dropped[kErlangDropKinds];  // the link carries them across reloads
    std::atomic<uint64_t> erlang_messages[kErlangMessageKinds];  // so it does these
};

struct AccessLogShared {
    RobustMutex lock;
    std::atomic<uint64_t> generation;  // bumped whenever somebody reopens the file
    std::atomic<uint64_t> dev, ino;    // identity of the file opened at that generation
};

// The layout at the start of the segment; arrays follow at fixed offsets.
struct SegmentHeader {
    uint32_t magic;
    uint32_t nmodules, nslots, nacceptors, queue_capacity;
    uint64_t caches_bytes;  // the answer caches' regions, at the end
    int32_t master_pid;
    // Set by the master on reload: the generation that takes over this one's idle
    // connections (0: none, they are closed).
    std::atomic<uint64_t> successor;
    // Set by the master while a graceful stop waits out drain_timeout (__admin__:health).
    std::atomic<uint32_t> draining;
    GlobalStats stats;
    AccessLogShared access_log;
};

// One generation's segment, mapped in every process of the generation.
class Segment {
public:
    // Creates (master) a segment for the given sizes, removing any stale one of that name.
    // `cache_sizes[m]`, when given, is module m's answer cache (0: none).
    static std::unique_ptr<Segment> create(const std::string& name, uint32_t nmodules, uint32_t nslots,
                                           uint32_t nacceptors, uint32_t queue_capacity,
                                           const std::vector<size_t>& cache_sizes = {});
    // Opens an existing segment read-write (bertd stats, the Erlang link) by the name create
    // was given; once the master has unlinked it, through the master's descriptor.
    static std::unique_ptr<Segment> open(const std::string& name);
    ~Segment();

    SegmentHeader& header() { return *header_; }
    ModuleShared& module(uint32_t i) { return modules_[i]; }
    Slot& slot(uint32_t i) { return slots_[i]; }
    AcceptorShared& acceptor(uint32_t i) { return acceptors_[i]; }
    AnswerCache* cache(uint32_t module) { return caches_[module].get(); }  // null: the module has none
    uint32_t nmodules() const { return header_->nmodules; }
    uint32_t nslots() const { return header_->nslots; }
    uint32_t nacceptors() const { return header_->nacceptors; }
    const std::string& name() const { return name_; }
    void remove();  // unlinks the name (master, at exit)

    // ---- The slot table and queues; every call takes the module's lock. ----
    enum class Grant { Leased, Queued, QueueFull, NoIdle };
    // Leases an idle slot of `module` for (acceptor, request), the one the acceptor held
    // last if it is idle, or queues the request (unless `may_queue` is false: then NoIdle).
    Grant lease_or_enqueue(uint32_t module, int32_t acceptor, uint64_t request, bool high, int64_t now_us,
                           uint32_t& slot_out, bool may_queue = true);
    // Gives `slot` back after a request, or offers one the master just made ready (a
    // new or restarted worker). If somebody waits, the slot passes to the oldest high
    // (then low) waiter, or to one of the releasing acceptor's own that queued within
    // 250 us after it (next_waiter): returns its acceptor index (the caller wakes it), else -1 and
    // the slot becomes idle. A slot marked `retire`, or Dead (its worker died after
    // answering), goes to Reaping instead (returns -2) so the master replaces its worker.
    int32_t release(uint32_t slot);
    // Whether release() would now pass `slot` to a waiter of another acceptor than its owner.
    bool next_waiter_elsewhere(uint32_t slot);
    uint32_t queue_length(uint32_t module, bool high);
    // Reads owner and request of a slot consistently (under the lock).
    bool owned_by(uint32_t slot, int32_t acceptor, uint64_t& request_out);
    // Moves a slot to Reaping (its worker is gone or must go); the master takes over.
    void mark_reaping(uint32_t slot);
    // Master, on a worker's death: Leased -> Dead (returns the owner to wake), other -> Reaping (returns -1).
    int32_t worker_died(uint32_t slot);

    // ---- Why a module is failing (FailureNote); no lock. ----
    // Master: sets the reason (cut to fit), or clears it with an empty one.
    void set_module_failure(uint32_t module, std::string_view why);
    // Anyone: the reason the master gave, or "" while the module's workers are healthy.
    std::string module_failure(uint32_t module) const;
    // Anyone, cheaply (one load): whether the master says the module is failing.
    bool module_failing(uint32_t module) const;

private:
    Segment() = default;
    void layout(char* base);
    Ring* first_waiting(ModuleShared& m, QueueEntry*& base);
    int32_t pop_waiter(ModuleShared& m, uint32_t slot, int32_t prefer);
    uint32_t next_waiter(const QueueEntry* base, const Ring& r, int32_t prefer) const;
    QueueEntry take_waiter(QueueEntry* base, Ring& r, uint32_t at);

    std::string name_;
    std::unique_ptr<struct SegmentMapping> mapping_;
    SegmentHeader* header_ = nullptr;
    ModuleShared* modules_ = nullptr;
    Slot* slots_ = nullptr;
    AcceptorShared* acceptors_ = nullptr;
    QueueEntry* queue_ = nullptr;
    std::vector<std::unique_ptr<AnswerCache>> caches_;  // views, by module
};

}  // namespace bertd
