// client.h: the C++ BERT-RPC client for bertd (or any BERT-RPC 1.0 server): synchronous calls and
// casts with timeouts, priorities and optional persistent connections, errors as exceptions per type.
// It never hands a caller an answer that belongs to another request: after any failure the
// connection is closed, never reused.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bert/codec.h"
#include "bert/term.h"
#include "bertd/rpc10.h"

namespace bertd {

// What the client throws. Everything derives from rpc::Error (a std::runtime_error).
namespace rpc {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Could not connect, or the connection broke before a whole answer came back. The request
// may have run on the server.
class ConnectionError : public Error {
public:
    using Error::Error;
};

// No whole answer within the timeout (or no connection within the connect timeout).
class TimeoutError : public ConnectionError {
public:
    using ConnectionError::ConnectionError;
};

// The server answered something that is not a BERT-RPC answer to the request.
class InvalidAnswer : public Error {
public:
    using Error::Error;
};

// The server answered {error, {Type, Code, Class, Detail, Backtrace}}; one subclass per Type.
// what() reads "Type error Code: Class: Detail".
class RemoteError : public Error {
public:
    RemoteError(std::string type, int64_t code, std::string error_class, std::string detail,
                std::vector<std::string> backtrace);
    const std::string& type() const { return type_; }  // "protocol", "server", "user", "proxy", ...
    int64_t code() const { return code_; }
    const std::string& error_class() const { return class_; }
    const std::string& detail() const { return detail_; }  // exactly the server's text
    const std::vector<std::string>& backtrace() const { return backtrace_; }

private:
    std::string type_;
    int64_t code_;
    std::string class_;
    std::string detail_;
    std::vector<std::string> backtrace_;
};

class ProtocolError : public RemoteError {
public:
    using RemoteError::RemoteError;
};
class ServerError : public RemoteError {
public:
    using RemoteError::RemoteError;
};
class UserError : public RemoteError {
public:
    using RemoteError::RemoteError;
};
class ProxyError : public RemoteError {
public:
    using RemoteError::RemoteError;
};

}  // namespace rpc

// Default sends no priority info, which a server takes as high.
enum class Priority : uint8_t { Default, High, Low };

struct ClientOptions {
    // Bounds the whole exchange (sending the request and reading the whole answer); 0 waits for ever.
    std::chrono::milliseconds timeout{0};
    // Bounds connecting; 0 means the same as `timeout`.
    std::chrono::milliseconds connect_timeout{0};
    Priority priority = Priority::Default;
    // Keep one connection for many requests (answers come back in request order). Without it each
    // request opens and closes its own connection, as Ruby's bertrpc does.
    bool persistent = false;
    // Largest answer accepted (BERT bytes, after inflating a compressed one); a bigger one is an
    // InvalidAnswer. Answers are decoded with no other limit but nesting (1000 levels). Also bounds
    // a streamed answer gathered for a caller that gave no on_chunk.
    size_t max_answer = 256u << 20;
    // How floats in requests are written: FloatForm::New (NEW_FLOAT_EXT, the default) or
    // FloatForm::Ernie (FLOAT_EXT, for Ernie-era servers and handlers, whose bert library reads
    // no other). Answers are read in either form.
    bert::FloatForm float_format = bert::FloatForm::New;
    // A streamed request's chunks are at most this long (keep it at most the server's max_frame).
    size_t chunk_size = kDefaultChunk;
    // A streamed answer's chunk longer than this is an InvalidAnswer.
    size_t max_chunk = 64u << 20;
};

// BERT-RPC 1.0: where the server casts {cast, Module, Function, Args ++ [Result]} once a cast's
// work is done ({info, callback, [{service, <<"host:port">>}, {mfa, M, F, A}]}).
struct Callback {
    std::string service;  // "host:port"
    std::string module, function;
    std::vector<bert::Term> args;
};

// What an answer carried beyond its value (Client::request).
struct Answer {
    std::optional<bert::Term> value;  // the reply's term; nullopt for {noreply}
    std::optional<CacheInfo> cache;   // the cache info before it, if any
    bool valid = false;               // {info, valid, []}: the client's token still holds
    bool streamed = false;            // chunks came after the reply
    uint64_t stream_bytes = 0;        // their bytes
};

// An {info, Command, Options} frame sent before one request (e.g. {info, cache, [validation, Tok]}).
struct Info {
    std::string command;
    std::vector<bert::Term> options;
};

struct RequestOptions {
    std::optional<Priority> priority;                  // overrides ClientOptions::priority
    std::optional<std::chrono::milliseconds> timeout;  // overrides ClientOptions::timeout (0: for ever)
    std::vector<Info> infos;                           // sent after the priority info, before the request

    // BERT-RPC 1.0 (doc/info-packets.md).
    // A streamed request: called for the next bytes (fill up to `cap`, return how many; 0 ends
    // the stream). The request is sent with {info, stream, []}, then chunks, then the zero header.
    std::function<size_t(char* buf, size_t cap)> stream_in;
    // A streamed answer: announces {info, accept, [stream]} and passes each chunk here as it
    // arrives (memory stays bounded); without it a streamed answer is gathered into the value.
    std::function<void(std::string_view chunk)> on_chunk;
    bool accept_cache = false;              // announces {info, accept, [cache]}: Answer::cache
    std::optional<std::string> validation;  // sends {info, cache, [{validation, Token}]}
    std::optional<Callback> callback;       // a cast only: sends {info, callback, ...}
};

// Not safe for concurrent use: give each thread its own Client.
class Client {
public:
    Client(std::string host, uint16_t port, ClientOptions options = {});
    ~Client();
    Client(Client&& other) noexcept;
    Client& operator=(Client&& other) noexcept;
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // {call, Module, Function, Args}: returns the reply's value, throws rpc::* on anything else.
    // c.call("calc", "add", {1, 2}); c.call("store", "put", {bert::Term::binary("k"), v});
    bert::Term call(std::string_view module, std::string_view function, std::vector<bert::Term> args = {},
                    const RequestOptions& options = {});

    // {cast, Module, Function, Args}: returns once the server has answered {noreply}.
    void cast(std::string_view module, std::string_view function, std::vector<bert::Term> args = {},
              const RequestOptions& options = {});

    // The general form: kind "call" or "cast", and the whole answer (value, cache info, valid,
    // streamed). Errors throw as for call().
    Answer request(std::string_view kind, std::string_view module, std::string_view function,
                   std::vector<bert::Term> args, const RequestOptions& options = {});

    // Sends `payload` as the request frame exactly as given (BERT bytes, not checked, so it may be
    // malformed) after the options' infos, and returns the answer interpreted as for a call
    // ({noreply} gives nullopt). For tools and tests.
    std::optional<bert::Term> request_raw(std::string_view payload, const RequestOptions& options = {});

    // Closes the persistent connection, if any; a later request opens a new one.
    void close();
    bool connected() const { return fd_ >= 0; }

    const std::string& host() const { return host_; }
    uint16_t port() const { return port_; }

private:
    enum class Expect : uint8_t { Reply, NoReply, Any };
    Answer exchange(std::string_view request_payload, const RequestOptions& options, Expect expect);

    std::string host_;
    uint16_t port_;
    ClientOptions options_;
    int fd_ = -1;  // the persistent connection, when there is one
};

}  // namespace bertd
