// cache.h: a module's answer cache in the shared segment (a module's `cache: {size: ...}`).
// Keys are request bytes, values what bertd sends for them; every acceptor reads and
// writes it under one robust lock. It is a log: entries are appended at a moving head and
// the oldest are overwritten as it wraps; an index of hashes finds them; a hit in the older
// half is copied to the head, so what is used stays (least recently used goes first). An
// entry is indexed only once it is written whole, so a process killed mid-store leaves at
// worst an entry nobody can find. Fixed records, offsets not pointers; no I/O.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "shm/segment.h"

namespace bertd {

struct CacheHeader {
    RobustMutex lock;
    uint64_t capacity;  // bytes of the log
    uint64_t head;      // where the next entry goes, counted from the start (it only grows)
    uint32_t nbuckets;
    std::atomic<uint64_t> hits, misses, stores, refused;  // refused: too big to cache
};

// Views one module's cache region (`bytes` long, at `base`) in a mapped segment.
class AnswerCache {
public:
    // Bytes a region needs to cache about `size` bytes of entries (the log and its index).
    static size_t region_size(size_t size);
    // Sets up a zeroed region (the master, once).
    static void init(void* base, size_t bytes);
    AnswerCache(void* base, size_t bytes);

    // The value stored for `key` if it has not expired at `now_us` (monotonic).
    bool find(std::string_view key, int64_t now_us, std::string& value);
    // Stores `value` for `key` until `expires_us` (0: for ever). Values over a quarter of the
    // log are not cached (they would push everything else out).
    void store(std::string_view key, std::string_view value, int64_t expires_us);
    CacheHeader& header() { return *h_; }

private:
    struct Bucket {
        uint64_t hash;
        uint64_t pos;  // where its entry starts, + 1 (0: empty)
    };
    struct Entry {
        uint64_t pos;  // where it starts (checks that the bucket points at this entry)
        uint64_t hash;
        int64_t expires_us;
        uint32_t key_len, value_len;
    };
    bool live(uint64_t pos) const;  // not yet overwritten by the wrapping head
    Entry* entry_at(uint64_t pos);
    uint64_t append(uint64_t hash, std::string_view key, std::string_view value, int64_t expires_us);
    Bucket* bucket_for(uint64_t hash, std::string_view key);

    CacheHeader* h_;
    Bucket* buckets_;
    char* log_;
};

uint64_t cache_hash(std::string_view key);

}  // namespace bertd
