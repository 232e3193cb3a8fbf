// rpc10_cpp.cc: a handler on bertd's C++ library that uses its BERT-RPC 1.0 calls (a Call's
// streams, cache infos and validation), module `lib`, for tests/integration/test_rpc10.py.
// The same functions as rpc10_py.py, where C++ can express them.
#include <zlib.h>

#include <bertd/handler.h>

namespace {

using bert::Term;

Term sum_stream(bertd::Args, bertd::Call& call) {
    int64_t count = 0;
    uLong crc = crc32(0, nullptr, 0);
    uint64_t total = call.read_stream([&](std::string_view chunk) {
        ++count;
        crc = crc32(crc, reinterpret_cast<const Bytef*>(chunk.data()), static_cast<uInt>(chunk.size()));
    });
    if (!call.streamed()) crc = 0;
    return Term::list({Term(count), Term(static_cast<int64_t>(total)), Term(static_cast<int64_t>(crc))});
}

// Reads only N chunks: throwing out of the callback stops the reading.
Term head_stream(bertd::Args a, bertd::Call& call) {
    struct Enough {};
    std::vector<Term> sizes;
    size_t n = static_cast<size_t>(a[0].as_int());
    try {
        call.read_stream([&](std::string_view chunk) {
            sizes.emplace_back(static_cast<int64_t>(chunk.size()));
            if (sizes.size() == n) throw Enough{};
        });
    } catch (const Enough&) {
    }
    return Term::list(std::move(sizes));
}

Term stream_out(bertd::Args a, bertd::Call& call) {
    int64_t n = a[0].as_int(), size = a[1].as_int();
    call.stream([n, size](bertd::ChunkWriter& out) {
        for (int64_t i = 0; i < n; ++i) out.write(std::string(static_cast<size_t>(size), char('a' + i % 26)));
    });
    return Term::nil();
}

Term echo_stream(bertd::Args, bertd::Call& call) {
    call.stream(
        [&call](bertd::ChunkWriter& out) { call.read_stream([&](std::string_view c) { out.write(c); }); });
    return Term::binary("echo");
}

Term stream_forever(bertd::Args a, bertd::Call& call) {
    std::string block(static_cast<size_t>(a[0].as_int()), 'f');
    call.stream([block](bertd::ChunkWriter& out) {
        for (;;) out.write(block);
    });
    return Term::nil();
}

Term stream_then_fail(bertd::Args a, bertd::Call& call) {
    int64_t n = a[0].as_int();
    call.stream([n](bertd::ChunkWriter& out) {
        for (int64_t i = 0; i < n; ++i) out.write(std::string(1000, 'x'));
        throw std::runtime_error("the producer failed after it began");
    });
    return Term::nil();
}

Term stream_fail_first(bertd::Args, bertd::Call& call) {
    call.stream([](bertd::ChunkWriter&) { throw bertd::UserError("KeyError", "before the first chunk"); });
    return Term::nil();
}

int64_t calls = 0;

Term cached(bertd::Args a, bertd::Call& call) {
    bertd::CacheInfo c;
    c.access = bertd::CacheInfo::Access::Public;
    c.expiration = 60;
    call.cache(c);
    return Term::list({a[0], Term(++calls)});
}

Term validated(bertd::Args a, bertd::Call& call) {
    ++calls;
    if (call.validation_token() == "v1") {
        call.valid();
        return Term::nil();
    }
    bertd::CacheInfo c;
    c.validation = "v1";
    call.cache(c);
    return Term::list({a[0], Term(calls)});
}

Term bad_cache(bertd::Args a, bertd::Call& call) {
    bertd::CacheInfo c;
    if (a[0].bytes() == "expiration") c.expiration = -1;
    call.cache(c);
    return Term::binary("unreachable");
}

}  // namespace

int main() {
    bertd::Handler h;
    h.expose("lib", "sum_stream", 0, sum_stream);
    h.expose("lib", "head_stream", 1, head_stream);
    h.expose("lib", "stream_out", 2, stream_out);
    h.expose("lib", "echo_stream", 0, echo_stream);
    h.expose("lib", "stream_forever", 1, stream_forever);
    h.expose("lib", "stream_then_fail", 1, stream_then_fail);
    h.expose("lib", "stream_fail_first", 0, stream_fail_first);
    h.expose("lib", "cached", 1, cached);
    h.expose("lib", "validated", 1, validated);
    h.expose("lib", "bad_cache", 1, bad_cache);
    h.expose("lib", "add", 2, [](bertd::Args a) { return Term(a[0].as_int() + a[1].as_int()); });
    return h.run();
}
