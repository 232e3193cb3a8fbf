// bench_handler.cc: the handler of make bench's cache and stream rows (tests/bench/rows.py), on
// bertd's C++ library: modules `cached` and `uncached` echo their argument with a public cache
// info that never expires; module `stream` consumes a streamed request (sink/0) or streams an
// answer of N bytes (source/2). It never keeps a stream's bytes beyond one chunk.
#include <bertd/handler.h>

#include <string>

namespace {

using bert::Term;

Term cached_echo(bertd::Args a, bertd::Call& call) {
    bertd::CacheInfo c;
    c.access = bertd::CacheInfo::Access::Public;
    c.expiration = 0;  // valid for ever
    call.cache(c);
    return std::move(a[0]);
}

// Counts the streamed request's bytes: [Chunks, Bytes].
Term sink(bertd::Args, bertd::Call& call) {
    int64_t chunks = 0;
    uint64_t bytes = call.read_stream([&](std::string_view) { ++chunks; });
    return Term::list({Term(chunks), Term(static_cast<int64_t>(bytes))});
}

// Streams Bytes bytes in chunks of Chunk bytes (the last one shorter), from one buffer.
Term source(bertd::Args a, bertd::Call& call) {
    int64_t bytes = a[0].as_int(), chunk = a[1].as_int();
    if (bytes < 0 || chunk <= 0 || chunk > (64 << 20)) throw bertd::UserError("ArgumentError", "bad sizes");
    call.stream([bytes, chunk](bertd::ChunkWriter& out) {
        std::string block(static_cast<size_t>(chunk), 'x');
        for (int64_t left = bytes; left > 0; left -= chunk)
            out.write(std::string_view(block).substr(0, static_cast<size_t>(std::min(left, chunk))));
    });
    return Term::nil();
}

}  // namespace

int main() {
    bertd::Handler h;
    h.expose("cached", "echo", 1, cached_echo);
    h.expose("uncached", "echo", 1, cached_echo);
    h.expose("stream", "sink", 0, sink);
    h.expose("stream", "source", 2, source);
    h.set_chunk_size(256u << 10);
    return h.run();
}
