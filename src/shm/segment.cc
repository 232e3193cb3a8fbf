// segment.cc: creating and mapping the shared segment (Boost.Interprocess), the
// robust lock, and the slot/queue operations. Everything here runs under a
// module lock for a few hundred nanoseconds and never blocks on I/O.
#include "shm/segment.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <new>
#include <stdexcept>

#include "io/ipc.h"
#include "shm/cache.h"

namespace bip = boost::interprocess;

namespace bertd {

constexpr uint32_t kMagic = 0xBE27D001;

// The creator's mapping (Boost), or a reader's plain mmap of a descriptor (Segment::open).
struct SegmentMapping {
    bip::shared_memory_object shm;
    bip::mapped_region region;
    void* raw = nullptr;
    size_t raw_len = 0;
    ~SegmentMapping() {
        if (raw) munmap(raw, raw_len);
    }
};

void RobustMutex::init() {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&m_, &a);
    pthread_mutexattr_destroy(&a);
}

void RobustMutex::lock() {
    int rc = pthread_mutex_lock(&m_);
    // The holder died. The records it guards are updated so that any prefix of an
    // update leaves them usable, so taking the lock over is safe.
    if (rc == EOWNERDEAD) pthread_mutex_consistent(&m_);
}

int latency_bucket(uint64_t us) {
    if (us < 4) return int(us);
    int e = 63 - __builtin_clzll(us);          // us in [2^e, 2^(e+1))
    int sub = int((us >> (e - 2)) & 3);        // next two bits
    int b = 4 * (e - 1) + sub;
    return b < kLatencyBuckets ? b : kLatencyBuckets - 1;
}

uint64_t latency_bucket_upper(int b) {
    if (b < 4) return uint64_t(b);
    int e = b / 4 + 1, sub = b % 4;
    return (uint64_t(4 + sub + 1) << (e - 2)) - 1;
}

uint64_t Histogram::percentile(double p) const {
    uint64_t total = 0;
    for (const auto& b : buckets) total += b.load(std::memory_order_relaxed);
    if (total == 0) return 0;
    auto rank = uint64_t(p / 100.0 * double(total));
    if (rank >= total) rank = total - 1;
    uint64_t seen = 0;
    for (int i = 0; i < kLatencyBuckets; ++i) {
        seen += buckets[i].load(std::memory_order_relaxed);
        if (seen > rank) return latency_bucket_upper(i);
    }
    return latency_bucket_upper(kLatencyBuckets - 1);
}

namespace {
size_t align(size_t n) { return (n + 63) & ~size_t(63); }

size_t segment_size(uint32_t nmodules, uint32_t nslots, uint32_t nacceptors, uint32_t qcap) {
    return align(sizeof(SegmentHeader)) + align(sizeof(ModuleShared) * nmodules) + align(sizeof(Slot) * nslots) +
           align(sizeof(AcceptorShared) * nacceptors) + align(sizeof(QueueEntry) * size_t(qcap) * 2 * nmodules);
}
}  // namespace

Segment::~Segment() = default;

void Segment::layout(char* base) {
    header_ = reinterpret_cast<SegmentHeader*>(base);
    size_t off = align(sizeof(SegmentHeader));
    modules_ = reinterpret_cast<ModuleShared*>(base + off);
    off += align(sizeof(ModuleShared) * header_->nmodules);
    slots_ = reinterpret_cast<Slot*>(base + off);
    off += align(sizeof(Slot) * header_->nslots);
    acceptors_ = reinterpret_cast<AcceptorShared*>(base + off);
    off += align(sizeof(AcceptorShared) * header_->nacceptors);
    queue_ = reinterpret_cast<QueueEntry*>(base + off);
    caches_.resize(header_->nmodules);
    for (uint32_t i = 0; i < header_->nmodules; ++i)
        if (modules_[i].cache_bytes)
            caches_[i] = std::make_unique<AnswerCache>(base + modules_[i].cache_offset, modules_[i].cache_bytes);
}

std::unique_ptr<Segment> Segment::create(const std::string& name, uint32_t nmodules, uint32_t nslots,
                                         uint32_t nacceptors, uint32_t qcap, const std::vector<size_t>& cache_sizes) {
    bip::shared_memory_object::remove(name.c_str());
    std::unique_ptr<Segment> s(new Segment);
    s->name_ = name;
    size_t fixed = segment_size(nmodules, nslots, nacceptors, qcap), caches = 0;
    for (size_t c : cache_sizes)
        if (c) caches += AnswerCache::region_size(c);
    size_t size = fixed + caches;
    s->mapping_ = std::make_unique<SegmentMapping>();
    s->mapping_->shm = bip::shared_memory_object(bip::create_only, name.c_str(), bip::read_write, bip::permissions(0600));
    s->mapping_->shm.truncate(bip::offset_t(size));
    s->mapping_->region = bip::mapped_region(s->mapping_->shm, bip::read_write);
    char* base = static_cast<char*>(s->mapping_->region.get_address());
    memset(base, 0, size);  // every record is valid when zeroed, but for its lock
    auto* h = new (base) SegmentHeader;
    h->nmodules = nmodules;
    h->nslots = nslots;
    h->nacceptors = nacceptors;
    h->queue_capacity = qcap;
    h->caches_bytes = caches;
    // The caches' regions first (layout() makes their views).
    uint64_t at = fixed;
    for (uint32_t i = 0; i < nmodules && i < cache_sizes.size(); ++i) {
        if (!cache_sizes[i]) continue;
        auto* m = reinterpret_cast<ModuleShared*>(base + align(sizeof(SegmentHeader))) + i;
        m->cache_offset = at;
        m->cache_bytes = AnswerCache::region_size(cache_sizes[i]);
        AnswerCache::init(base + at, cache_sizes[i]);
        at += m->cache_bytes;
    }
    s->layout(base);
    h->access_log.lock.init();
    for (uint32_t i = 0; i < nmodules; ++i) {
        s->modules_[i].lock.init();
        s->modules_[i].queue_base = i * 2 * qcap;
    }
    for (uint32_t i = 0; i < nslots; ++i) {
        s->slots_[i].owner = -1;
        s->slots_[i].last_owner = -1;
        s->slots_[i].state.store(uint32_t(SlotState::Reaping));  // no worker yet
    }
    h->magic = kMagic;
    // Every process that uses it is forked from the master, which keeps the mapping:
    // the name can go now, so nothing is left in /dev/shm even after a kill -9.
    bip::shared_memory_object::remove(name.c_str());
    return s;
}

std::unique_ptr<Segment> Segment::open(const std::string& name) {
    // The master unlinks each name once it has mapped it: the segment is then reached
    // through the master's own descriptor (its user's or root's to open).
    int fd = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd < 0 && errno == ENOENT) {
        std::string path = IpcNames::segment_in_master(name);
        if (!path.empty()) fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    }
    if (fd < 0) throw std::runtime_error("cannot open the shared segment " + name + ": " + strerror(errno));
    struct stat st;
    void* base = MAP_FAILED;
    if (fstat(fd, &st) == 0 && size_t(st.st_size) >= sizeof(SegmentHeader))
        base = mmap(nullptr, size_t(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (base == MAP_FAILED) throw std::runtime_error("shared segment " + name + " is not a bertd segment");
    std::unique_ptr<Segment> s(new Segment);
    s->name_ = name;
    s->mapping_ = std::make_unique<SegmentMapping>();
    s->mapping_->raw = base;
    s->mapping_->raw_len = size_t(st.st_size);
    auto* h = static_cast<SegmentHeader*>(base);
    if (h->magic != kMagic ||
        size_t(st.st_size) < segment_size(h->nmodules, h->nslots, h->nacceptors, h->queue_capacity) + h->caches_bytes)
        throw std::runtime_error("shared segment " + name + " is not a bertd segment");
    s->header_ = h;
    s->layout(static_cast<char*>(base));
    return s;
}

void Segment::remove() { bip::shared_memory_object::remove(name_.c_str()); }

Segment::Grant Segment::lease_or_enqueue(uint32_t module, int32_t acceptor, uint64_t request, bool high,
                                         int64_t now, uint32_t& slot_out, bool may_queue) {
    ModuleShared& m = modules_[module];
    LockGuard g(m.lock);
    uint32_t idle = UINT32_MAX;
    for (uint32_t i = m.first_slot; i < m.first_slot + m.nslots; ++i) {
        const Slot& s = slots_[i];
        if (s.state.load(std::memory_order_relaxed) != uint32_t(SlotState::Idle)) continue;
        if (idle == UINT32_MAX) idle = i;
        if (s.last_owner.load(std::memory_order_relaxed) == acceptor) {
            idle = i;
            break;
        }
    }
    if (idle != UINT32_MAX) {
        Slot& s = slots_[idle];
        s.owner = acceptor;
        s.last_owner = acceptor;
        s.request = request;
        s.state.store(uint32_t(SlotState::Leased), std::memory_order_release);
        slot_out = idle;
        return Grant::Leased;
    }
    if (!may_queue) return Grant::NoIdle;
    Ring& r = high ? m.high : m.low;
    uint32_t cap = header_->queue_capacity;
    if (r.count >= cap) return Grant::QueueFull;
    QueueEntry* base = queue_ + m.queue_base + (high ? 0 : cap);
    base[(r.head + r.count) % cap] = QueueEntry{acceptor, request, now};
    ++r.count;
    (high ? m.stats.queued_high : m.stats.queued_low).fetch_add(1, std::memory_order_relaxed);
    return Grant::Queued;
}

// The waiter at `at` (counted from the head) leaves the ring; those before it move up one.
QueueEntry Segment::take_waiter(QueueEntry* base, Ring& r, uint32_t at) {
    uint32_t cap = header_->queue_capacity;
    QueueEntry e = base[(r.head + at) % cap];
    for (uint32_t j = at; j > 0; --j) base[(r.head + j) % cap] = base[(r.head + j - 1) % cap];
    r.head = (r.head + 1) % cap;
    --r.count;
    return e;
}

// Which waiter of a ring gets the slot: the oldest, unless one of `prefer`'s (the acceptor
// giving the slot back) queued at most kAffinityUs after it, among the first few: that one
// keeps the slot without a hand-off between acceptors (no wake, no re-registration). The
// oldest waits at most kAffinityUs more for it; priorities are never crossed.
uint32_t Segment::next_waiter(const QueueEntry* base, const Ring& r, int32_t prefer) const {
    constexpr uint32_t kAffinityScan = 8;
    constexpr int64_t kAffinityUs = 250;
    uint32_t cap = header_->queue_capacity;
    const QueueEntry& oldest = base[r.head];
    if (prefer < 0 || oldest.acceptor == prefer) return 0;
    for (uint32_t k = 1; k < std::min(r.count, kAffinityScan); ++k) {
        const QueueEntry& e = base[(r.head + k) % cap];
        if (e.enqueued_us - oldest.enqueued_us > kAffinityUs) break;
        if (e.acceptor == prefer) return k;
    }
    return 0;
}

// The ring a slot given back serves (high, then low) and where its entries are; null when
// nobody waits.
Ring* Segment::first_waiting(ModuleShared& m, QueueEntry*& base) {
    uint32_t cap = header_->queue_capacity;
    base = queue_ + m.queue_base + (m.high.count ? 0 : cap);
    return m.high.count ? &m.high : m.low.count ? &m.low : nullptr;
}

int32_t Segment::pop_waiter(ModuleShared& m, uint32_t slot, int32_t prefer) {
    QueueEntry* base;
    Ring* r = first_waiting(m, base);
    if (!r) return -1;
    QueueEntry e = take_waiter(base, *r, next_waiter(base, *r, prefer));
    Slot& s = slots_[slot];
    s.owner = e.acceptor;
    s.last_owner = e.acceptor;
    s.request = e.request;
    s.state.store(uint32_t(SlotState::Leased), std::memory_order_release);
    return e.acceptor;
}

int32_t Segment::release(uint32_t slot) {
    Slot& s = slots_[slot];
    ModuleShared& m = modules_[s.module];
    LockGuard g(m.lock);
    // Dead: the worker answered, then died before the slot came back. Leasing the slot
    // again would send the next request to nobody; the master must replace the worker.
    if (s.retire.load(std::memory_order_relaxed) || s.state.load() == uint32_t(SlotState::Dead)) {
        s.owner = -1;
        s.state.store(uint32_t(SlotState::Reaping), std::memory_order_release);
        return -2;
    }
    if (int32_t a = pop_waiter(m, slot, s.owner.load(std::memory_order_relaxed)); a >= 0) return a;
    s.owner = -1;
    s.state.store(uint32_t(SlotState::Idle), std::memory_order_release);
    return -1;
}

bool Segment::next_waiter_elsewhere(uint32_t slot) {
    Slot& s = slots_[slot];
    ModuleShared& m = modules_[s.module];
    LockGuard g(m.lock);
    int32_t owner = s.owner.load(std::memory_order_relaxed);
    QueueEntry* base;
    Ring* r = first_waiting(m, base);
    return r && base[(r->head + next_waiter(base, *r, owner)) % header_->queue_capacity].acceptor != owner;
}

bool Segment::owned_by(uint32_t slot, int32_t acceptor, uint64_t& request_out) {
    Slot& s = slots_[slot];
    LockGuard g(modules_[s.module].lock);
    if (s.state.load() != uint32_t(SlotState::Leased) || s.owner.load() != acceptor) return false;
    request_out = s.request.load();
    return true;
}

void Segment::mark_reaping(uint32_t slot) {
    Slot& s = slots_[slot];
    LockGuard g(modules_[s.module].lock);
    s.owner = -1;
    s.state.store(uint32_t(SlotState::Reaping));
}

int32_t Segment::worker_died(uint32_t slot) {
    Slot& s = slots_[slot];
    LockGuard g(modules_[s.module].lock);
    uint32_t st = s.state.load();
    if (st == uint32_t(SlotState::Leased)) {
        s.state.store(uint32_t(SlotState::Dead));
        return s.owner.load();
    }
    if (st != uint32_t(SlotState::Dead) && st != uint32_t(SlotState::Stopped)) s.state.store(uint32_t(SlotState::Reaping));
    return -1;
}

void Segment::set_module_failure(uint32_t module, std::string_view why) {
    FailureNote& f = modules_[module].failure;
    uint32_t seq = f.seq.load(std::memory_order_relaxed);
    f.seq.store(seq + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    size_t n = std::min(why.size(), sizeof f.text - 1);
    for (size_t i = 0; i < sizeof f.text; ++i)
        std::atomic_ref<char>(f.text[i]).store(i < n ? why[i] : '\0', std::memory_order_relaxed);
    f.seq.store(seq + 2, std::memory_order_release);
}

bool Segment::module_failing(uint32_t module) const {
    return std::atomic_ref<char>(modules_[module].failure.text[0]).load(std::memory_order_relaxed) != '\0';
}

std::string Segment::module_failure(uint32_t module) const {
    FailureNote& f = modules_[module].failure;
    char copy[sizeof f.text];
    for (int attempt = 0; attempt < 100; ++attempt) {
        uint32_t before = f.seq.load(std::memory_order_acquire);
        if (before & 1) continue;
        for (size_t i = 0; i < sizeof f.text; ++i)
            copy[i] = std::atomic_ref<char>(f.text[i]).load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (f.seq.load(std::memory_order_relaxed) == before) {
            copy[sizeof copy - 1] = '\0';
            return copy;
        }
    }
    return {};  // the master keeps rewriting it: nothing consistent to report
}

uint32_t Segment::queue_length(uint32_t module, bool high) {
    ModuleShared& m = modules_[module];
    LockGuard g(m.lock);
    return high ? m.high.count : m.low.count;
}

}  // namespace bertd
