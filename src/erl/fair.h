// fair.h: the link's waiting room for work from Erlang nodes (rpc calls, messages to
// registered names), one bounded queue per key, served round robin with a cap on how
// many items of one key run at once. So one slow module or a flood to one name never
// holds up the others, and memory stays bounded. Pure data structure; no I/O.
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>

namespace bertd::erl {

template <class T>
class FairQueues {
public:
    // True when an item of `key` may start at once: nothing of the key waits (order
    // within a key is kept) and fewer than `cap` run.
    bool can_start(const std::string& key, size_t cap) const {
        auto it = q_.find(key);
        return it == q_.end() || (it->second.waiting.empty() && it->second.running < cap);
    }
    // Counts an item of `key` as running (the caller started it).
    void started(const std::string& key, size_t cap) {
        Q& q = q_[key];
        q.cap = cap;
        ++q.running;
    }
    // Puts an item in `key`'s queue; false (and the item left with the caller) when
    // `limit` items of the key already wait.
    bool push(const std::string& key, size_t cap, size_t limit, T&& item) {
        Q& q = q_[key];
        q.cap = cap;
        if (q.waiting.size() >= limit) {
            forget_if_idle(key);
            return false;
        }
        q.waiting.push_back(std::move(item));
        ++waiting_;
        if (!q.in_turns) {
            q.in_turns = true;
            turns_.push_back(key);
        }
        return true;
    }
    // The next item to start, taking keys in turn and skipping those at their cap; the
    // item counts as running. False when nothing may start.
    bool pop(std::string& key, T& out) {
        for (size_t n = turns_.size(); n > 0; --n) {
            std::string k = std::move(turns_.front());
            turns_.pop_front();
            Q& q = q_[k];
            if (q.waiting.empty()) {
                q.in_turns = false;
                forget_if_idle(k);
                continue;
            }
            if (q.running >= q.cap) {
                turns_.push_back(std::move(k));
                continue;
            }
            out = std::move(q.waiting.front());
            q.waiting.pop_front();
            --waiting_;
            ++q.running;
            if (q.waiting.empty())
                q.in_turns = false;
            else
                turns_.push_back(k);
            key = std::move(k);
            return true;
        }
        return false;
    }
    // One running item of `key` is done.
    void finished(const std::string& key) {
        auto it = q_.find(key);
        if (it == q_.end()) return;
        if (it->second.running > 0) --it->second.running;
        forget_if_idle(key);
    }
    size_t waiting() const { return waiting_; }
    size_t waiting(const std::string& key) const {
        auto it = q_.find(key);
        return it == q_.end() ? 0 : it->second.waiting.size();
    }
    size_t running(const std::string& key) const {
        auto it = q_.find(key);
        return it == q_.end() ? 0 : it->second.running;
    }
    size_t keys() const { return q_.size(); }

private:
    struct Q {
        std::deque<T> waiting;
        size_t running = 0, cap = 1;
        bool in_turns = false;
    };
    // Keys come from Erlang nodes (module names): one with nothing left is erased.
    void forget_if_idle(const std::string& key) {
        auto it = q_.find(key);
        if (it != q_.end() && it->second.running == 0 && it->second.waiting.empty() && !it->second.in_turns)
            q_.erase(it);
    }
    std::unordered_map<std::string, Q> q_;
    std::deque<std::string> turns_;  // keys with waiting items, in the order they are served
    size_t waiting_ = 0;
};

}  // namespace bertd::erl
