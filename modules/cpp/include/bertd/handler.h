// handler.h: the C++ library for bertd (and Ernie) external handlers: expose
// functions, then run() serves BERPs from fd 3 and answers on fd 4. It never
// writes to stdout (the handler's own), and never answers an {info, ...}.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

#include "bert/codec.h"
#include "bert/term.h"
#include "bertd/rpc10.h"

namespace bertd {

// The arguments of a call. Mutable so that a function may move an argument into
// its result (an echo then costs no copy); a function taking
// std::span<const bert::Term> is accepted as well.
using Args = std::span<bert::Term>;
using Function = std::function<bert::Term(Args)>;

// Throw this from an exposed function to choose the error class the client sees:
// the answer is {error, {user, 0, <<Class>>, <<Message>>, []}}. Any other
// exception is reported with its demangled type name as the class.
class UserError : public std::runtime_error {
public:
    UserError(std::string error_class, const std::string& message)
        : std::runtime_error(message), class_(std::move(error_class)) {}
    const std::string& error_class() const { return class_; }

private:
    std::string class_;
};

// Where a streamed answer's bytes go (Call::stream). write() cuts them into chunks of at most
// the handler's chunk size and skips empty ones; it blocks while bertd (so the client) is slow.
class ChunkWriter {
public:
    virtual ~ChunkWriter() = default;
    virtual void write(std::string_view bytes) = 0;
};

// BERT-RPC 1.0 for one request, passed to functions exposed with a CallFunction
// (doc/info-packets.md). Valid only while the function runs.
class Call {
public:
    // True when the request was streamed ({info, stream, []} before it).
    virtual bool streamed() const = 0;
    // Passes the request stream's chunks, in order, to `on_chunk` as they arrive; returns their
    // bytes. Nothing to read (0) for a request that was not streamed, or a second time. A stream
    // cut short throws std::runtime_error (and the worker ends after the answer). What the function
    // leaves unread is read and dropped after it returns.
    virtual uint64_t read_stream(const std::function<void(std::string_view chunk)>& on_chunk) = 0;
    // The token of the client's {info, cache, [{validation, Token}]}, if it sent one.
    virtual const std::optional<std::string>& validation_token() const = 0;
    // Attaches {info, cache, Options} to the answer (not to an error answer). Throws
    // std::invalid_argument for a CacheInfo with neither expiration nor token, or a negative one.
    virtual void cache(const CacheInfo& info) = 0;
    // The client's token still holds: the answer is {info, valid, []} then {noreply}, whatever
    // the function returns.
    virtual void valid() = 0;
    // Answers with a stream: {info, stream, []}, {reply, Reply} (the function's return value),
    // then what `produce` writes, then the zero header. `produce` runs after the function
    // returned; if it throws before it wrote anything the answer is an ordinary user error,
    // after that the worker ends (run() returns 1: a stream cannot end with an error).
    virtual void stream(std::function<void(ChunkWriter& out)> produce) = 0;

protected:
    ~Call() = default;
};

using CallFunction = std::function<bert::Term(Args, Call&)>;

class Handler {
public:
    static constexpr int kAnyArity = -1;
    static constexpr size_t kDefaultMaxRequest = 256u << 20;

    // Exposes Module:Function. With an arity, a call with another number of
    // arguments is answered "No such function" (as for an unknown function);
    // without one, any arity reaches `fn`. Exposing the same name again replaces it.
    void expose(std::string_view module, std::string_view function, Function fn);
    void expose(std::string_view module, std::string_view function, int arity, Function fn);
    // A function that uses BERT-RPC 1.0 (streams, cache infos, validation) through its Call.
    void expose(std::string_view module, std::string_view function, CallFunction fn);
    void expose(std::string_view module, std::string_view function, int arity, CallFunction fn);

    // Serves requests until end-of-file on `in_fd`; returns the process exit
    // status: 0 on a clean EOF, 1 when a read or write failed or the stream was
    // cut inside a frame. Reads block; partial reads and writes are handled.
    int run(int in_fd = 3, int out_fd = 4);

    // Largest request payload accepted; a bigger one is skipped and answered with
    // a protocol error.
    void set_max_request(size_t bytes) { max_request_ = bytes; }
    // Longest chunk a streamed answer writes (keep it at most bertd's limits.max_frame).
    void set_chunk_size(size_t bytes) { chunk_size_ = bytes ? bytes : kDefaultChunk; }

    // How floats in answers are written: FloatForm::New (NEW_FLOAT_EXT, the
    // default, what Erlang writes) or FloatForm::Ernie (FLOAT_EXT, the only form
    // Ernie-era clients such as the bert gem and bertrpc read). Requests are read
    // in either form.
    void set_float_format(bert::FloatForm form) { float_format_ = form; }

    // Limits for decoding a request's arguments (bert::Limits in bert/codec.h):
    // by default arguments whose decoded form would take more than max(64 MiB,
    // 4 x their size) are answered with a protocol error instead.
    void set_limits(const bert::Limits& limits) { limits_ = limits; }

    // Answers one BERT payload (no frame header): the answer's payload, or
    // nothing for an {info, ...}. run() uses it; tests and embedders may too.
    std::optional<std::string> handle(std::string_view payload);

private:
    struct Entry {
        int arity = kAnyArity;
        Function fn;
        CallFunction call_fn;
    };
    class Served;  // the Call of one request
    class Reader;
    // Lookups take the string_view that the peek points at, without allocating.
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    using Functions = std::unordered_map<std::string, Entry, Hash, std::equal_to<>>;
    std::unordered_map<std::string, Functions, Hash, std::equal_to<>> modules_;
    size_t max_request_ = kDefaultMaxRequest;
    bert::FloatForm float_format_ = bert::FloatForm::New;
    bert::Limits limits_;
    size_t chunk_size_ = kDefaultChunk;
    // What the infos before the next request said.
    bool next_streamed_ = false;
    std::optional<std::string> next_token_;

    // Writes the answer to `payload` as a whole frame into `out` (which starts
    // empty); false for an info, which gets no answer. `call` is the request's Call (none:
    // functions get one that has no stream, and what they attach is dropped).
    bool answer(std::string_view payload, std::string& out, Served* call = nullptr);
    void note_info(std::string_view payload);
    static bool drop_stream(const std::function<void(ChunkWriter&)>& produce);
    static void reply_into(bert::Term result, Served& call, bert::FloatForm floats, std::string& out);
    // Writes the answer `out` built for `call` (and its stream, if it streams); false when the
    // worker must end (a write failed, a stream was cut short).
    bool finish(Served& call, int out_fd, const std::string& out);
};

}  // namespace bertd
