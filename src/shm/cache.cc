// cache.cc: the answer cache's log and index. Every operation holds the cache's lock for
// a lookup or a copy; nothing here blocks on I/O.
#include "shm/cache.h"

#include <cstring>
#include <new>

namespace bertd {

namespace {
constexpr int kProbes = 8;
constexpr size_t align8(size_t n) { return (n + 7) & ~size_t(7); }
constexpr size_t align64(size_t n) { return (n + 63) & ~size_t(63); }

uint32_t buckets_for(size_t size) {
    uint32_t n = 64;
    while (n < size / 512 && n < (1u << 24)) n <<= 1;
    return n;
}
}  // namespace

uint64_t cache_hash(std::string_view key) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (unsigned char c : key) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

size_t AnswerCache::region_size(size_t size) {
    return align64(sizeof(CacheHeader)) + align64(sizeof(Bucket) * buckets_for(size)) + align64(size);
}

void AnswerCache::init(void* base, size_t size) {
    auto* h = new (base) CacheHeader;
    h->lock.init();
    h->nbuckets = buckets_for(size);
    h->capacity = align64(size);
    h->head = 0;
}

AnswerCache::AnswerCache(void* base, size_t) {
    h_ = static_cast<CacheHeader*>(base);
    buckets_ = reinterpret_cast<Bucket*>(static_cast<char*>(base) + align64(sizeof(CacheHeader)));
    log_ = reinterpret_cast<char*>(buckets_) + align64(sizeof(Bucket) * h_->nbuckets);
}

bool AnswerCache::live(uint64_t pos) const { return pos + h_->capacity >= h_->head; }

AnswerCache::Entry* AnswerCache::entry_at(uint64_t pos) {
    return reinterpret_cast<Entry*>(log_ + pos % h_->capacity);
}

uint64_t AnswerCache::append(uint64_t hash, std::string_view key, std::string_view value, int64_t expires_us) {
    size_t total = align8(sizeof(Entry) + key.size() + value.size());
    uint64_t offset = h_->head % h_->capacity;
    if (offset + total > h_->capacity) h_->head += h_->capacity - offset;  // entries never wrap
    uint64_t pos = h_->head;
    Entry* e = entry_at(pos);
    char* data = reinterpret_cast<char*>(e + 1);
    memcpy(data, key.data(), key.size());
    memcpy(data + key.size(), value.data(), value.size());
    e->hash = hash;
    e->expires_us = expires_us;
    e->key_len = uint32_t(key.size());
    e->value_len = uint32_t(value.size());
    e->pos = pos;  // last: until now no bucket points here
    h_->head = pos + total;
    return pos;
}

// The bucket holding `key`, else the one to put it in: the first empty or overwritten one
// probed, else the one whose entry is oldest.
AnswerCache::Bucket* AnswerCache::bucket_for(uint64_t hash, std::string_view key) {
    Bucket* spare = nullptr;
    bool spare_dead = false;
    for (int i = 0; i < kProbes; ++i) {
        Bucket& b = buckets_[(hash + uint64_t(i)) & (h_->nbuckets - 1)];
        bool dead = b.pos == 0 || !live(b.pos - 1);
        if (!dead && b.hash == hash) {
            Entry* e = entry_at(b.pos - 1);
            if (e->pos == b.pos - 1 && e->hash == hash && e->key_len == key.size() &&
                memcmp(e + 1, key.data(), key.size()) == 0)
                return &b;
        }
        if (dead) {
            if (!spare_dead) spare = &b;
            spare_dead = true;
        } else if (!spare_dead && (!spare || b.pos < spare->pos)) {
            spare = &b;
        }
    }
    return spare;
}

bool AnswerCache::find(std::string_view key, int64_t now_us, std::string& value) {
    uint64_t hash = cache_hash(key);
    LockGuard g(h_->lock);
    Bucket* b = bucket_for(hash, key);
    bool hit = b && b->pos != 0 && b->hash == hash && live(b->pos - 1);
    Entry* e = hit ? entry_at(b->pos - 1) : nullptr;
    hit = hit && e->pos == b->pos - 1 && e->key_len == key.size() && memcmp(e + 1, key.data(), key.size()) == 0;
    if (hit && e->expires_us != 0 && e->expires_us <= now_us) {
        b->pos = 0;  // expired: forget it
        hit = false;
    }
    if (!hit) {
        h_->misses.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    const char* data = reinterpret_cast<const char*>(e + 1);
    value.assign(data + e->key_len, e->value_len);
    // Used again while in the older half of the log: copied to the head, so it stays.
    if (b->pos - 1 + h_->capacity / 2 < h_->head) {
        int64_t expires = e->expires_us;
        std::string k(data, e->key_len);
        b->pos = append(hash, k, value, expires) + 1;
    }
    h_->hits.fetch_add(1, std::memory_order_relaxed);
    return true;
}

void AnswerCache::store(std::string_view key, std::string_view value, int64_t expires_us) {
    size_t total = align8(sizeof(Entry) + key.size() + value.size());
    if (total > h_->capacity / 4) {
        h_->refused.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    uint64_t hash = cache_hash(key);
    LockGuard g(h_->lock);
    Bucket* b = bucket_for(hash, key);
    uint64_t pos = append(hash, key, value, expires_us);
    b->hash = hash;
    b->pos = pos + 1;  // indexed only now that it is whole
    h_->stores.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace bertd
