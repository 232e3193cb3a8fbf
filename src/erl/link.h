// link.h: the Erlang link process: the one holder of bertd's C-node identity. One
// libevent loop multiplexes the distribution connections, the acceptors' native
// requests, calls and messages from Erlang nodes, and handler workers' erlang_rpc;
// many calls are in flight at once, matched by tag, each with its own deadline.
// It never blocks on a peer: handshakes run on cnode.h's threads, every socket
// is non-blocking, and a slow call only occupies an entry in a table.
#pragma once

#include <event2/event.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bert/term.h"
#include "core/cli.h"
#include "core/config.h"
#include "erl/cnode.h"
#include "erl/dist.h"
#include "erl/identity.h"
#include "erl/proto.h"
#include "io/ipc.h"
#include "log/throttle.h"

namespace bertd::erl {

class Link {
public:
    Link(Options opts, Config config, Identity id, int master_pid, IpcNames ipc, int acceptors, int handlers);
    ~Link();
    Link(const Link&) = delete;
    Link& operator=(const Link&) = delete;

    int run();  // returns the process exit status

    // ---- what the source files share -------------------------------------------------
    struct Stream {
        enum class Kind { Dist, Acceptor, Loop, Handler } kind;
        Link* link = nullptr;
        uint64_t id = 0;
        int fd = -1;
        event* rev = nullptr;
        event* wev = nullptr;
        std::string in;
        size_t in_start = 0;
        std::string out;
        size_t out_start = 0;
        bool dead = false;
        bool dirty = false;  // has output to flush at the end of this callback
        explicit Stream(Kind k) : kind(k) {}
        virtual ~Stream();
    };
    struct DistConn : Stream {
        DistConn() : Stream(Kind::Dist) {}
        std::string node;
        int64_t last_in_us = 0;
    };
    struct AccConn : Stream {
        AccConn() : Stream(Kind::Acceptor) {}
        bool hello = false;
        uint64_t generation = 0;
        uint32_t index = 0;
    };
    // An external call from the Erlang side (rpc:call, erpc, a message to a
    // registered name), run as a BERT-RPC request on a loop connection.
    struct ExtCall {
        enum class Origin { Rex, Spawn, Message } origin = Origin::Message;
        std::string frame;  // the BERP {call|cast, M, F, Args}
        std::string node;   // who asked
        bert::Pid from;     // Rex: where {Tag, Result} goes; Spawn: the spawning process
        bert::Term tag;     // Rex
        bert::Term req_id;  // Spawn: the request (and monitor) reference
        bert::Term res;     // Spawn: erpc's result reference
        bert::Pid fake;     // Spawn: the "process" that ran the call
        bool monitor = false, linked = false, cast = false;
        std::string what;  // "ext:add/2", for the log
    };
    struct LoopConn : Stream {
        LoopConn() : Stream(Kind::Loop) {}
        uint64_t acceptor = 0;  // the AccConn it was handed to
        uint64_t generation = 0;
        bool busy = false;
        bool closing = false;  // close once the call in progress is answered
        std::unique_ptr<ExtCall> call;
    };
    struct HandlerConn : Stream {
        HandlerConn() : Stream(Kind::Handler) {}
        bool busy = false;
    };

    struct NativeReq {
        uint64_t acceptor = 0, tag = 0;
        uint8_t flags = 0;
        std::string payload;
        int64_t deadline_us = 0;  // answered with an error if still waiting then
    };
    struct Node {
        std::string name;
        uint64_t conn = 0;  // the preferred DistConn
        bool dialing = false;
        bool wanted = false;  // native modules run there: keep it connected
        int fails = 0;
        int64_t retry_at_us = 0;
        std::string last_error;
        enum class Setup { None, Loading, Ready, Failed } setup = Setup::None;
        std::string setup_error;
        int64_t setup_retry_us = 0;
        std::unordered_map<std::string, std::set<std::pair<std::string, int>>> exports;  // module -> F/A
        std::unordered_map<std::string, std::string> missing;  // module -> why it cannot be loaded
        std::vector<NativeReq> waiting;  // arrived while the node connects or its exports load
        std::vector<std::function<void(const std::string& error)>> on_connect;  // "" on success
    };
    struct Call {
        enum class Kind { Native, EnsureLoaded, LoadBeam, Exports, HandlerRpc } kind = Kind::Native;
        std::string node;
        uint64_t conn = 0;
        int64_t deadline_us = 0;
        std::multimap<int64_t, uint64_t>::iterator deadline;
        bool has_deadline = false;
        // Native
        uint64_t acceptor = 0, acc_tag = 0;
        bool cast = false;
        std::string mf;  // "mod:fun", for messages
        double timeout_s = 0;
        // HandlerRpc
        uint64_t handler = 0;
    };

private:
    // link.cc: the loop, streams, nodes, calls
    static void on_read(evutil_socket_t, short, void*);
    static void on_write(evutil_socket_t, short, void*);
    static void on_listen(evutil_socket_t, short, void*);
    static void on_handshake(evutil_socket_t, short, void*);
    static void on_tick(evutil_socket_t, short, void*);
    static void on_signal(evutil_socket_t, short, void*);
    static void on_epmd(evutil_socket_t, short, void*);
    Stream* add_stream(std::unique_ptr<Stream> s, int fd);
    void stream_readable(Stream& s);
    void close_stream(Stream& s, const std::string& why);
    void queue_out(Stream& s);
    void flush(Stream& s);
    void flush_dirty();
    void after_callback();
    Stream* find(uint64_t id, Stream::Kind kind);
    void accept_local(int listen_fd, Stream::Kind kind);
    void handshakes_done();
    void add_dist(int fd, const std::string& node, bool incoming);
    Node& node(const std::string& name);
    void ensure_connected(Node& n);
    int64_t retry_delay_us(const Node& n) const;
    void node_up(Node& n);
    void dist_closed(DistConn& d);
    DistConn* conn_of(Node& n);
    void tick();
    void reload();
    void apply_config();
    uint64_t new_tag() { return next_tag_++; }
    Call& add_call(uint64_t tag, Call c, double timeout_s);
    void expire_calls(int64_t now);

    // dist packets out (link.cc)
    void send_packet(DistConn& d, const bert::Term& control, const bert::Term* message);
    void send_to_pid(const std::string& node, const bert::Pid& to, const bert::Term& message);
    void send_to_name(DistConn& d, const std::string& name, const bert::Term& message);
    // {'$gen_call', {Self, Tag}, {call, M, F, Args, user}} to rex; `args` writes the
    // argument list's elements (their count is `nargs`).
    void rex_call(DistConn& d, uint64_t tag, std::string_view m, std::string_view f, size_t nargs,
                  const std::function<void(Ext&)>& args);

    // native.cc: native requests from acceptors, the export cache
    void acceptor_message(AccConn& a, uint8_t type, uint64_t tag, std::string_view body);
    void native_request(AccConn& a, uint64_t tag, uint8_t flags, std::string_view payload);
    void decide_native(Node& n, uint64_t acceptor, uint64_t tag, uint8_t flags, std::string_view payload);
    void answer_acceptor(uint64_t acceptor, uint64_t tag, uint8_t type, std::string_view payload);
    void answer_error(uint64_t acceptor, uint64_t tag, int code, const std::string& detail);
    void decline(uint64_t acceptor, uint64_t tag, linkproto::DeclineReason why);
    void native_reply(Call& c, std::string_view result);
    void start_setup(Node& n);
    void send_exports_query(Node& n);
    void setup_reply(Call& c, std::string_view result);
    void setup_failed(Node& n, const std::string& why);
    void drain_waiting(Node& n);
    bool holds_requests(const Node& n) const;
    void hold_native(Node& n, uint64_t acceptor, uint64_t tag, uint8_t flags, std::string_view payload,
                     const std::string& module);
    void fail_waiting(Node& n, const std::string& why);
    void expire_waiting(int64_t now);
    std::string not_connected(const Node& n) const;  // "the Erlang node N is not connected (why)"
    void fail_call(Call& c, const std::string& why);

    // inbound.cc: what Erlang nodes send, and the loop connections that serve it
    void dist_packet(DistConn& d, std::string_view body);
    void reg_send(DistConn& d, const bert::Pid& from, const std::string& name, std::string_view message);
    void spawn_request(DistConn& d, const bert::Term& control, std::string_view message);
    void reply_message(std::string_view message);
    void start_ext(std::unique_ptr<ExtCall> call);
    void finish_ext(ExtCall& call, const bert::Term* answer, const std::string& error);
    LoopConn* free_loop();
    LoopConn* new_loop();
    void loop_readable(LoopConn& l);
    void loop_done(LoopConn& l);
    void retire_loops(uint64_t newest_generation);

    // handlers.cc: erlang_rpc and erlang_send for external handler workers
    void handler_readable(HandlerConn& h);
    void handler_request(HandlerConn& h, const bert::Term& req);
    void handler_answer(uint64_t handler, const bert::Term& answer);
    void handler_error(uint64_t handler, const std::string& detail);
    std::string default_node() const;

    Options opts_;
    Config config_;
    Identity id_;
    int master_pid_;
    IpcNames ipc_;
    CNode cnode_;
    event_base* base_ = nullptr;
    std::vector<event*> events_;
    event* epmd_ev_ = nullptr;
    Fd acc_listen_, handler_listen_;
    std::unordered_map<uint64_t, std::unique_ptr<Stream>> streams_;
    std::vector<std::unique_ptr<Stream>> graveyard_;
    std::vector<uint64_t> dirty_;
    uint64_t next_stream_ = 1;
    std::map<std::string, Node> nodes_;
    std::unordered_map<std::string, std::string> native_modules_;  // module -> node
    std::unordered_map<std::string, double> native_timeouts_;      // module -> seconds (0: none)
    std::unordered_map<std::string, RegisteredName> registered_;
    std::unordered_map<uint64_t, Call> calls_;
    std::multimap<int64_t, uint64_t> deadlines_;
    uint64_t next_tag_ = 1;
    std::deque<std::unique_ptr<ExtCall>> ext_waiting_;
    uint32_t next_fake_ = 1;
    uint64_t newest_generation_ = 0;
    uint32_t next_acceptor_ = 0;  // round robin for new loop connections
    int64_t last_keepalive_us_ = 0;
    int64_t epmd_retry_us_ = 0;
    std::string helper_beam_;  // bertd_native.beam, read once
    log::Throttle refused_acceptors_{10'000'000}, refused_handlers_{10'000'000};  // strangers at the local sockets
    bool stopping_ = false;
};

// Runs the link in this (forked) process; returns the exit status.
// `acceptors` and `handlers` are the listen sockets the master holds for the server's life
// (so no other process can take their names while the link restarts); the link owns them now.
int run_link(const Options& opts, const Config& config, const Identity& id, int master_pid,
             const IpcNames& ipc, int acceptors, int handlers);

}  // namespace bertd::erl
