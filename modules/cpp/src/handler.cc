// handler.cc: the request loop of C++ external handlers (see bertd/handler.h).
// It peeks before it decodes, so errors and routing cost no argument decoding, and
// it must never die on bad input: every malformed request gets an error answer.
// BERT-RPC 1.0: a streamed request is read through the request's Call as the function asks,
// and what it leaves is drained before the answer; a streamed answer drains it before its end.
#include "bertd/handler.h"

#include <cxxabi.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <typeinfo>
#include <utility>
#include <vector>

#include "bert/codec.h"
#include "bert/frame.h"
#include "bertd/erlang.h"

namespace bertd {
namespace {

using bert::Term;

constexpr size_t kReadChunk = 64 * 1024;
// A buffer grown for one big request is given back once it has been served.
constexpr size_t kKeepBuffer = 1u << 20;

Term pair(std::string_view tag, Term value) {
    std::vector<Term> items;
    items.reserve(2);
    items.push_back(Term::atom(tag));
    items.push_back(std::move(value));  // moved, never copied: results may be large
    return Term::tuple(std::move(items));
}

Term error_term(std::string_view type, int code, std::string_view error_class, std::string_view detail) {
    return pair("error", Term::tuple({Term::atom(type), Term(code), Term::binary(error_class),
                                      Term::binary(detail), Term::nil()}));
}

// Encodes `t` as a whole frame into `out`, header first.
void frame_into(const Term& t, std::string& out, bert::FloatForm floats = bert::FloatForm::New) {
    out.assign(bert::kFrameHeader, '\0');
    bert::encode_append(t, out, {floats});
    bert::put_frame_header(out.data(), static_cast<uint32_t>(out.size() - bert::kFrameHeader));
}

const std::string& noreply_frame() {
    static const std::string frame = [] {
        std::string f;
        frame_into(Term::tuple({Term::atom("noreply")}), f);
        return f;
    }();
    return frame;
}

std::string demangled(const char* mangled) {
    int status = 0;
    char* name = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    if (status != 0 || name == nullptr) return mangled;
    std::string s(name);
    std::free(name);
    return s;
}

// Runs the function; the thrown exception, if any, becomes a user error term.
template <class Entry>
Term call_user(const Entry& entry, Args args, Call& call, bool& failed) {
    failed = true;
    try {
        Term r = entry.fn ? entry.fn(args) : entry.call_fn(args, call);
        failed = false;
        return r;
    } catch (const UserError& e) {
        return error_term("user", 0, e.error_class(), e.what());
    } catch (const std::exception& e) {
        return error_term("user", 0, demangled(typeid(e).name()), e.what());
    } catch (...) {
        return error_term("user", 0, "UnknownError", "an exception that is not a std::exception");
    }
}

// bertd runs a message to a name this worker's module registered (erlang.h's
// erlang_register_process) as {call, Module, '$bertd_message', [Name, Message]},
// answered {reply, ok}; a failure is answered as an error, which bertd counts and logs.
constexpr std::string_view kProcessFunction = "$bertd_message";

Term run_process(std::string_view payload, bool cast, Call& call) {
    Term request;
    if (bert::DecodeError err = bert::decode(payload, request))
        return error_term("protocol", 2, "ProtocolError", "Unable to read data: " + err.message);
    const auto& args = request.items()[3].items();
    std::string name = args.size() == 2 && args[0].is_atom() ? args[0].atom_name() : "";
    ProcessFunction fn = detail::erlang_process(name);
    if (!fn)
        return error_term("server", 2, "ServerError",
                          "no Erlang process '" + name + "' is registered in worker " + std::to_string(getpid()));
    struct {
        Function fn;
        CallFunction call_fn;
    } entry{[&](Args) {
                fn(args[1]);
                return Term::atom("ok");
            },
            nullptr};
    bool failed = false;
    Term result = call_user(entry, Args(), call, failed);
    if (failed) return result;
    return cast ? Term::tuple({Term::atom("noreply")}) : pair("reply", Term::atom("ok"));
}

bool write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

}  // namespace

// Blocking reader over one fd that keeps whatever arrived beyond the current frame.
class Handler::Reader {
public:
    explicit Reader(int fd) : fd_(fd), buf_(kReadChunk, '\0') {}

    enum class Status { Ok, Eof, Error };

    // Makes at least `n` bytes available from the current position.
    Status fill(size_t n) {
        if (end_ - begin_ >= n) return Status::Ok;
        if (buf_.size() - begin_ < n) {
            // Move what is left to the front; grow only for a frame that cannot fit.
            std::copy(buf_.begin() + static_cast<ptrdiff_t>(begin_), buf_.begin() + static_cast<ptrdiff_t>(end_),
                      buf_.begin());
            end_ -= begin_;
            begin_ = 0;
            if (buf_.size() < n) buf_.resize(n);
        }
        while (end_ - begin_ < n) {
            ssize_t r = ::read(fd_, buf_.data() + end_, buf_.size() - end_);
            if (r < 0) {
                if (errno == EINTR) continue;
                return Status::Error;
            }
            if (r == 0) return Status::Eof;
            end_ += static_cast<size_t>(r);
        }
        return Status::Ok;
    }

    // Drops `n` bytes, reading and discarding those that have not arrived yet.
    Status skip(size_t n) {
        while (n > 0) {
            if (begin_ == end_) {
                begin_ = end_ = 0;
                if (Status s = fill(1); s != Status::Ok) return s;
            }
            size_t take = std::min(n, end_ - begin_);
            consume(take);
            n -= take;
        }
        return Status::Ok;
    }

    const char* data() const { return buf_.data() + begin_; }
    size_t available() const { return end_ - begin_; }

    void consume(size_t n) {
        begin_ += n;
        if (begin_ == end_) {
            begin_ = end_ = 0;
            if (buf_.size() > kKeepBuffer) std::string(kReadChunk, '\0').swap(buf_);
        }
    }

private:
    int fd_;
    std::string buf_;
    size_t begin_ = 0, end_ = 0;
};

// A streamed answer's bytes, cut into chunks, to the answer fd. Nothing is written before the
// first chunk (or the end), so a producer that fails at once still gets an ordinary error answer.
class StreamWriter final : public ChunkWriter {
public:
    struct WriteFailed {};
    StreamWriter(int fd, std::string head, size_t chunk) : fd_(fd), head_(std::move(head)), chunk_(chunk) {}

    void write(std::string_view bytes) override {
        while (!bytes.empty()) {
            size_t n = std::min(bytes.size(), chunk_);
            std::string& buf = started_ ? scratch_ : head_;
            if (started_) buf.clear();
            rpc10::append_chunk_header(buf, n);
            // A small chunk goes with its header in one write; a big one is written from `bytes`.
            if (n < 65536) buf.append(bytes.data(), n);
            if (!write_all(fd_, buf.data(), buf.size())) throw WriteFailed{};
            if (n >= 65536 && !write_all(fd_, bytes.data(), n)) throw WriteFailed{};
            started_ = true;
            head_.clear();
            bytes.remove_prefix(n);
        }
    }
    bool started() const { return started_; }
    bool end() {
        if (!started_ && !write_all(fd_, head_.data(), head_.size())) return false;
        return write_all(fd_, rpc10::kStreamEnd, sizeof rpc10::kStreamEnd);
    }

private:
    int fd_;
    std::string head_, scratch_;
    size_t chunk_;
    bool started_ = false;
};

// A writer for a cast's stream: the work is done, the bytes dropped.
class DropWriter final : public ChunkWriter {
public:
    void write(std::string_view) override {}
};

class Handler::Served final : public Call {
public:
    Served(Reader* in, std::optional<std::string> token, size_t max_chunk)
        : in_(in), token_(std::move(token)), max_chunk_(max_chunk) {}

    bool streamed() const override { return in_ != nullptr; }
    const std::optional<std::string>& validation_token() const override { return token_; }
    void cache(const CacheInfo& info) override { cache_ = rpc10::cache_info_frame(info); }
    void valid() override { valid_ = true; }
    void stream(std::function<void(ChunkWriter&)> produce) override { produce_ = std::move(produce); }

    uint64_t read_stream(const std::function<void(std::string_view)>& on_chunk) override {
        uint64_t total = 0;
        if (!in_ || done_) return 0;
        if (broken_) throw std::runtime_error("the request's stream was cut short");
        if (pending_) in_->consume(std::exchange(pending_, 0));  // a callback threw inside it
        for (;;) {
            if (in_->fill(bert::kFrameHeader) != Reader::Status::Ok) cut("end of input before its end");
            uint32_t n = bert::scan_frame(std::string_view(in_->data(), bert::kFrameHeader), ~0u).length;
            in_->consume(bert::kFrameHeader);
            if (n == 0) {
                done_ = true;
                return total;
            }
            if (n > max_chunk_) cut("a chunk of " + std::to_string(n) + " bytes is over the limit");
            if (in_->fill(n) != Reader::Status::Ok) cut("end of input inside a chunk");
            pending_ = n;
            on_chunk(std::string_view(in_->data(), n));
            in_->consume(std::exchange(pending_, 0));
            total += n;
        }
    }

    // Reads and drops what the function left of the stream; false when it was cut short.
    bool drain() {
        try {
            read_stream([](std::string_view) {});
            return true;
        } catch (const std::runtime_error& e) {
            std::fprintf(stderr, "bertd handler: %s\n", e.what());
            return false;
        }
    }
    // An error answer carries nothing the function attached.
    void drop_attachments() {
        cache_.clear();
        valid_ = false;
        produce_ = nullptr;
    }

    const std::string& cache_frame() const { return cache_; }
    bool is_valid() const { return valid_; }
    std::function<void(ChunkWriter&)>& produce() { return produce_; }

private:
    [[noreturn]] void cut(const std::string& why) {
        broken_ = true;
        throw std::runtime_error("the request's stream was cut short: " + why);
    }

    Reader* in_;
    std::optional<std::string> token_;
    size_t max_chunk_;
    size_t pending_ = 0;
    bool done_ = false, broken_ = false, valid_ = false;
    std::string cache_;
    std::function<void(ChunkWriter&)> produce_;
};

void Handler::expose(std::string_view module, std::string_view function, Function fn) {
    expose(module, function, kAnyArity, std::move(fn));
}

void Handler::expose(std::string_view module, std::string_view function, int arity, Function fn) {
    auto mod = modules_.find(module);
    if (mod == modules_.end()) mod = modules_.emplace(std::string(module), Functions{}).first;
    mod->second.insert_or_assign(std::string(function), Entry{arity, std::move(fn), nullptr});
}

void Handler::expose(std::string_view module, std::string_view function, CallFunction fn) {
    expose(module, function, kAnyArity, std::move(fn));
}

void Handler::expose(std::string_view module, std::string_view function, int arity, CallFunction fn) {
    auto mod = modules_.find(module);
    if (mod == modules_.end()) mod = modules_.emplace(std::string(module), Functions{}).first;
    mod->second.insert_or_assign(std::string(function), Entry{arity, nullptr, std::move(fn)});
}

void Handler::note_info(std::string_view payload) {
    Term t;
    if (bert::decode(payload, t) || !t.is_tuple(3)) return;
    if (t[1].is_atom("stream")) {
        next_streamed_ = true;
    } else if (t[1].is_atom("cache")) {
        CacheInfo c;
        std::string why;
        if (rpc10::read_cache_info(t[2], c, why))
            next_token_ = c.validation;
        else
            std::fprintf(stderr, "bertd handler: %s\n", why.c_str());
    }
}

// Tells undecodable bytes (protocol code 2) from a well-formed term of the wrong shape,
// without building the term.
static void not_a_request(std::string_view payload, const bert::Limits& limits, std::string& out) {
    if (bert::DecodeError err = bert::check(payload, limits))
        frame_into(error_term("protocol", 2, "ProtocolError", "Unable to read data: " + err.message), out);
    else
        frame_into(error_term("protocol", 0, "ProtocolError",
                              "Invalid request: expected {call|cast, Module, Function, Arguments}"),
                   out);
}

bool Handler::answer(std::string_view payload, std::string& out, Served* call) {
    bert::Peek peek;
    if (!bert::peek(payload, peek)) {
        not_a_request(payload, limits_, out);
        return true;
    }
    if (peek.kind == bert::Peek::Kind::Info) {
        note_info(payload);
        return false;
    }
    Served none(nullptr, std::nullopt, max_request_);
    if (!call) call = &none;

    const bool cast = peek.kind == bert::Peek::Kind::Cast;
    if (peek.function == kProcessFunction) {
        frame_into(run_process(payload, cast, *call), out);
        return true;
    }
    auto mod = modules_.find(peek.module);
    if (mod == modules_.end()) {
        frame_into(error_term("server", 1, "ServerError", "No such module '" + std::string(peek.module) + "'"),
                   out);
        return true;
    }
    auto fun = mod->second.find(peek.function);
    if (fun == mod->second.end() ||
        (fun->second.arity != kAnyArity && static_cast<uint32_t>(fun->second.arity) != peek.arity)) {
        frame_into(error_term("server", 2, "ServerError",
                              "No such function '" + std::string(peek.module) + ":" +
                                  std::string(peek.function) + "'"),
                   out);
        return true;
    }

    Term request;
    if (bert::DecodeError err = bert::decode(payload, request, limits_)) {
        frame_into(error_term("protocol", 2, "ProtocolError", "Unable to read data: " + err.message), out);
        return true;
    }
    // The peek has vouched for the shape: a 4-tuple whose last element is a proper list.
    auto& args = request.items()[3].items();
    bool failed = false;
    Term result = call_user(fun->second, Args(args.data(), args.size()), *call, failed);
    if (cast && !failed && call->produce()) failed = !drop_stream(call->produce());
    if (failed || cast || call == &none) call->drop_attachments();
    if (cast) {
        // The client already has its {noreply}; the failure would otherwise vanish.
        if (failed)
            std::fprintf(stderr, "bertd handler: cast %.*s:%.*s failed\n", static_cast<int>(peek.module.size()),
                         peek.module.data(), static_cast<int>(peek.function.size()), peek.function.data());
        out = noreply_frame();
    } else if (failed) {
        frame_into(result, out, float_format_);
    } else {
        reply_into(std::move(result), *call, float_format_, out);
    }
    return true;
}

// A cast's stream: the work is done, the bytes dropped. False when it threw.
bool Handler::drop_stream(const std::function<void(ChunkWriter&)>& produce) {
    DropWriter drop;
    try {
        produce(drop);
        return true;
    } catch (const std::exception&) {
        return false;
    }
}

// A call's answer with what its function attached: {info, valid, []} and {noreply}, or the
// cache info and the reply (a streamed answer's infos go before it in finish()).
void Handler::reply_into(Term result, Served& call, bert::FloatForm floats, std::string& out) {
    if (call.is_valid()) {
        out = rpc10::valid_info_frame() + noreply_frame();
        return;
    }
    frame_into(pair("reply", std::move(result)), out, floats);
    if (!call.produce() && !call.cache_frame().empty()) out.insert(0, call.cache_frame());
}

bool Handler::finish(Served& call, int out_fd, const std::string& out) {
    if (!call.produce()) return call.drain() && write_all(out_fd, out.data(), out.size());
    StreamWriter w(out_fd, call.cache_frame() + rpc10::stream_info_frame() + out, chunk_size_);
    try {
        call.produce()(w);
    } catch (const StreamWriter::WriteFailed&) {
        return false;
    } catch (const std::exception& e) {
        if (w.started()) {
            std::fprintf(stderr, "bertd handler: the streamed answer failed after it began (%s); ending\n",
                         e.what());
            return false;
        }
        std::string err;
        auto* user = dynamic_cast<const UserError*>(&e);
        frame_into(error_term("user", 0, user ? user->error_class() : demangled(typeid(e).name()), e.what()),
                   err);
        return call.drain() && write_all(out_fd, err.data(), err.size());
    }
    return call.drain() && w.end();
}

std::optional<std::string> Handler::handle(std::string_view payload) {
    std::string frame;
    if (!answer(payload, frame)) return std::nullopt;
    frame.erase(0, bert::kFrameHeader);
    return frame;
}

int Handler::run(int in_fd, int out_fd) {
    // A closed answer pipe must show up as a failed write, not kill the handler silently.
    ::signal(SIGPIPE, SIG_IGN);
    Reader in(in_fd);
    std::string out;
    for (;;) {
        Reader::Status s = in.fill(bert::kFrameHeader);
        if (s == Reader::Status::Eof) return in.available() == 0 ? 0 : 1;
        if (s == Reader::Status::Error) return 1;

        bert::FrameScan scan = bert::scan_frame(std::string_view(in.data(), in.available()), max_request_);
        in.consume(bert::kFrameHeader);
        if (scan.state == bert::FrameScan::State::TooLarge) {
            if (in.skip(scan.length) != Reader::Status::Ok) return 1;
            frame_into(error_term("protocol", 0, "ProtocolError",
                                  "Request of " + std::to_string(scan.length) + " bytes exceeds the limit of " +
                                      std::to_string(max_request_)),
                       out);
        } else {
            if (in.fill(scan.length) != Reader::Status::Ok) return 1;
            std::string_view payload(in.data(), scan.length);
            bert::Peek peek;
            bool info = bert::peek(payload, peek) && peek.kind == bert::Peek::Kind::Info;
            if (info) {
                note_info(payload);
                in.consume(scan.length);
                continue;
            }
            bool streamed = std::exchange(next_streamed_, false);
            Served call(streamed ? &in : nullptr, std::exchange(next_token_, std::nullopt), max_request_);
            if (streamed) {
                // The stream follows in `in`: the request must leave the buffer first.
                std::string copy(payload);
                in.consume(scan.length);
                answer(copy, out, &call);
            } else {
                answer(payload, out, &call);
                in.consume(scan.length);
            }
            if (!finish(call, out_fd, out)) return 1;
            continue;
        }
        if (!write_all(out_fd, out.data(), out.size())) return 1;
    }
}

}  // namespace bertd
