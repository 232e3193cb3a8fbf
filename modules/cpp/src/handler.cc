// handler.cc: the request loop of C++ external handlers (see bertd/handler.h).
// It peeks before it decodes, so errors and routing cost no argument decoding, and
// it must never die on bad input: every malformed request gets an error answer.
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
Term call_user(const Function& fn, Args args, bool& failed) {
    failed = true;
    try {
        Term r = fn(args);
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

Term run_process(std::string_view payload, bool cast) {
    Term request;
    if (bert::DecodeError err = bert::decode(payload, request))
        return error_term("protocol", 2, "ProtocolError", "Unable to read data: " + err.message);
    const auto& args = request.items()[3].items();
    std::string name = args.size() == 2 && args[0].is_atom() ? args[0].atom_name() : "";
    ProcessFunction fn = detail::erlang_process(name);
    if (!fn)
        return error_term("server", 2, "ServerError",
                          "no Erlang process '" + name + "' is registered in worker " + std::to_string(getpid()));
    bool failed = false;
    Term result = call_user([&](Args) { fn(args[1]); return Term::atom("ok"); }, Args(), failed);
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

// Blocking reader over one fd that keeps whatever arrived beyond the current frame.
class Reader {
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

}  // namespace

void Handler::expose(std::string_view module, std::string_view function, Function fn) {
    expose(module, function, kAnyArity, std::move(fn));
}

void Handler::expose(std::string_view module, std::string_view function, int arity, Function fn) {
    auto mod = modules_.find(module);
    if (mod == modules_.end()) mod = modules_.emplace(std::string(module), Functions{}).first;
    mod->second.insert_or_assign(std::string(function), Entry{arity, std::move(fn)});
}

bool Handler::answer(std::string_view payload, std::string& out) {
    bert::Peek peek;
    if (!bert::peek(payload, peek)) {
        // Tell undecodable bytes (protocol code 2) from a well-formed term of the wrong
        // shape, without building the term.
        if (bert::DecodeError err = bert::check(payload, limits_))
            frame_into(error_term("protocol", 2, "ProtocolError", "Unable to read data: " + err.message), out);
        else
            frame_into(error_term("protocol", 0, "ProtocolError",
                                  "Invalid request: expected {call|cast, Module, Function, Arguments}"),
                       out);
        return true;
    }
    if (peek.kind == bert::Peek::Kind::Info) return false;

    const bool cast = peek.kind == bert::Peek::Kind::Cast;
    if (peek.function == kProcessFunction) {
        frame_into(run_process(payload, cast), out);
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
    Term result = call_user(fun->second.fn, Args(args.data(), args.size()), failed);
    if (cast) {
        // The client already has its {noreply}; the failure would otherwise vanish.
        if (failed)
            std::fprintf(stderr, "bertd handler: cast %.*s:%.*s failed\n", static_cast<int>(peek.module.size()),
                         peek.module.data(), static_cast<int>(peek.function.size()), peek.function.data());
        out = noreply_frame();
    } else if (failed) {
        frame_into(result, out, float_format_);
    } else {
        frame_into(pair("reply", std::move(result)), out, float_format_);
    }
    return true;
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
            bool answered = answer(std::string_view(in.data(), scan.length), out);
            in.consume(scan.length);
            if (!answered) continue;
        }
        if (!write_all(out_fd, out.data(), out.size())) return 1;
    }
}

}  // namespace bertd
