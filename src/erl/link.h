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

#include "bert/codec.h"
#include "bert/term.h"
#include "core/cli.h"
#include "core/config.h"
#include "erl/cnode.h"
#include "erl/dist.h"
#include "erl/drops.h"
#include "erl/fair.h"
#include "erl/identity.h"
#include "erl/proto.h"
#include "io/ipc.h"
#include "log/throttle.h"
#include "shm/segment.h"

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
        // Rex: a $gen_call, answered {Tag, Result}; RexPlain: erl_interface's
        // {Pid, {call, ...}}, answered {rex, Result}.
        enum class Origin { Rex, RexPlain, Spawn, Message } origin = Origin::Message;
        std::string frame;  // the BERP {call|cast, M, F, Args}
        std::string key;    // its queue (fair.h): "m:Module" for calls, "n:Name" for messages
        size_t cap = 1;     // how many of its key may run at once
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
    // A handler worker's connection, and with it the worker's Erlang identity: a pid
    // of bertd's node made on first use, a mailbox, the names it registered and the
    // nodes it holds. All of it ends with the connection: a restarted worker (a new
    // connection) gets a new pid, and its predecessor's messages are never its own.
    struct HandlerConn : Stream {
        HandlerConn() : Stream(Kind::Handler) {}
        bool busy = false;
        bert::Pid pid;                    // num 0 until the worker asks for it
        std::deque<std::string> mailbox;  // messages (external format with version byte), oldest first
        bool receiving = false;           // a {recv, Timeout} waits for the next message
        std::multimap<int64_t, uint64_t>::iterator recv_deadline;
        bool has_recv_deadline = false;
        // Which worker this is, from the peer's pid and the slot table; module empty
        // when the peer is no worker of bertd's (a test, a daemon a worker left behind).
        bool resolved = false;
        std::string module;
        uint32_t slot = 0;
        int os_pid = 0;
        std::vector<std::string> names;  // registered through this connection
        std::vector<std::string> held;   // nodes held with erlang_connect
    };
    // A name a worker registered (erlang_register_process): its module's workers run
    // the message; it lives as long as one of the connections that registered it.
    struct ProcessName {
        std::string module;
        std::set<uint64_t> holders;  // HandlerConn ids
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
        std::set<uint64_t> held_by;      // handler connections that erlang_connect-ed it: keep it up
        uint32_t creation = 0;           // the node's, once learnt (0: not yet)
        std::vector<std::function<void(const std::string& error)>> on_connect;  // "" on success
    };
    struct Call {
        // PidLookup: a worker sends to {Node, Number, Serial}; the node says its creation.
        enum class Kind {
            Native,
            EnsureLoaded,
            LoadBeam,
            Exports,
            HandlerRpc,
            PidLookup
        } kind = Kind::Native;
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
        // HandlerRpc, PidLookup
        uint64_t handler = 0;
        bert::Term message;  // PidLookup: what to send once the pid is known
    };

private:
    // link.cc: the loop, its callbacks, the tick, reload
    static void on_read(evutil_socket_t, short, void*);
    static void on_write(evutil_socket_t, short, void*);
    static void on_listen(evutil_socket_t, short, void*);
    static void on_handshake(evutil_socket_t, short, void*);
    static void on_tick(evutil_socket_t, short, void*);
    static void on_signal(evutil_socket_t, short, void*);
    static void on_epmd(evutil_socket_t, short, void*);
    void after_callback();
    void tick();
    void reload();
    void apply_config();

    // streams.cc: the sockets, their reads, writes and closing
    Stream* add_stream(std::unique_ptr<Stream> s, int fd);
    void stream_readable(Stream& s);
    void close_stream(Stream& s, const std::string& why);
    void queue_out(Stream& s);
    void flush(Stream& s);
    void flush_dirty();
    Stream* find(uint64_t id, Stream::Kind kind);
    void accept_local(int listen_fd, Stream::Kind kind);

    // nodes.cc: the nodes kept connected, the calls in flight, dist packets out
    void handshakes_done();
    void add_dist(int fd, const std::string& node, bool incoming);
    Node& node(const std::string& name);
    void ensure_connected(Node& n);
    int64_t retry_delay_us(const Node& n) const;
    void node_up(Node& n);
    void dist_closed(DistConn& d);
    DistConn* conn_of(Node& n);
    uint64_t new_tag() { return next_tag_++; }
    Call& add_call(uint64_t tag, Call c, double timeout_s);
    void expire_calls(int64_t now);
    void fail_call(Call& c, const std::string& why);
    void send_packet(DistConn& d, const bert::Term& control, const bert::Term* message);
    void send_to_pid(const std::string& node, const bert::Pid& to, const bert::Term& message);
    void send_to_name(DistConn& d, const std::string& name, const bert::Term& message,
                      const bert::Pid* from = nullptr);
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
    void load_helper(Node& n);
    void exports_reply(Node& n, const bert::Term& t);
    void setup_failed(Node& n, const std::string& why);
    void drain_waiting(Node& n);
    bool holds_requests(const Node& n) const;
    void hold_native(Node& n, uint64_t acceptor, uint64_t tag, uint8_t flags, std::string_view payload,
                     const std::string& module);
    void fail_waiting(Node& n, const std::string& why);
    void expire_waiting(int64_t now);
    std::string not_connected(const Node& n) const;  // "the Erlang node N is not connected (why)"

    // inbound.cc: what Erlang nodes send, erpc's spawn requests, the end of an external call
    void dist_packet(DistConn& d, std::string_view body);
    void reg_send(DistConn& d, const bert::Pid& from, const std::string& name, std::string_view message);
    void spawn_request(DistConn& d, const bert::Term& control, std::string_view message);
    void reply_message(std::string_view message);
    void finish_ext(ExtCall& call, const bert::Term* answer, const std::string& error);

    // rex.cc: every request shape rpc and erl_interface send to rex
    void rex_message(DistConn& d, bert::Term msg);
    void sbcast(DistConn& d, const bert::Pid& from, const std::string& name, bert::Term msg, bool wrap);
    void start_rex_call(DistConn& d, ExtCall::Origin origin, const bert::Pid& from, const bert::Term& tag,
                        const bert::Term& req);

    // loops.cc: the fair queues of external calls and the loop connections that run them
    void start_ext(std::unique_ptr<ExtCall> call);
    void pump_ext();
    size_t cap_of(const std::string& module) const;
    LoopConn* free_loop();
    LoopConn* new_loop();
    LoopConn* any_loop();
    void run_on(LoopConn& l, std::unique_ptr<ExtCall> call);
    void loop_readable(LoopConn& l);
    void loop_done(LoopConn& l);
    void retire_loops(uint64_t newest_generation);

    // handlers.cc: what handler workers ask of the link (rpc, send, connect, self, register, recv)
    void handler_readable(HandlerConn& h);
    void handler_request(HandlerConn& h, const bert::Term& req);
    void handler_rpc(HandlerConn& h, const bert::Term& req);
    void handler_send(HandlerConn& h, const bert::Term& req);
    void handler_connect(HandlerConn& h, const bert::Term& req);
    void send_to_triple(DistConn& d, uint64_t handler, bert::Pid pid, const bert::Term& msg);
    void pid_found(Call& c, std::string_view result);
    void with_node(HandlerConn& h, const bert::Term& node_term, bool allow_self,
                   std::function<void(DistConn*)> go);
    void handler_answer(uint64_t handler, const bert::Term& answer);
    void handler_error(uint64_t handler, const std::string& detail);
    std::string default_node() const;
    // What every term from a handler, a worker or a node is decoded under (terms.h).
    bert::Limits term_limits() const;

    // processes.cc: bertd's node as a home of processes: worker pids and mailboxes,
    // registered names, message delivery, drops, and which worker a connection is
    const bert::Pid& pid_of(HandlerConn& h);
    bool resolve_worker(HandlerConn& h);
    // until_us: 0 on the request's arrival; else when a retry (the worker's slot not yet
    // known: bertd is starting) gives up.
    void handler_register(HandlerConn& h, const bert::Term& req, int64_t until_us = 0);
    void retry_registers();
    void handler_recv(HandlerConn& h, const bert::Term& req);
    void handler_gone(HandlerConn& h);
    void pid_message(const std::string& from_node, const bert::Pid& to, std::string_view message);
    void deliver(HandlerConn& h, std::string message, const std::string& from_node);
    void answer_message(HandlerConn& h, std::string_view message);
    void expire_receives(int64_t now);
    // A message to a name on bertd's node; false when no one has that name.
    bool deliver_to_name(const std::string& name, bert::Term msg, const std::string& from_node);
    std::string who(const bert::Pid& pid) const;  // for log lines
    void dropped(Drop why, const std::string& what);
    enum class Inbound { Rpc = 0, Name = 1, Pid = 2 };  // kErlangMessageNames' order
    void count_inbound(Inbound kind);
    void warn_limited(Drop why, const std::string& line);
    void open_segment(uint64_t generation);
    Segment* newest_segment();

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
    FairQueues<std::unique_ptr<ExtCall>> ext_queues_;
    uint32_t next_pid_ = 1;  // numbers of the pids the link makes (erpc's processes, workers)
    uint32_t new_pid_num();
    std::unordered_map<uint32_t, uint64_t> worker_pids_;  // pid number -> HandlerConn id
    std::map<uint32_t, std::string> gone_pids_;           // recently gone workers' pids -> who they were
    std::unordered_map<std::string, ProcessName> process_names_;
    std::multimap<int64_t, uint64_t> recv_deadlines_;        // -> HandlerConn id
    std::map<uint64_t, std::unique_ptr<Segment>> segments_;  // by generation: slot tables, stats
    struct PendingRegister {
        uint64_t handler;
        bert::Term req;
        int64_t until_us;
    };
    std::vector<PendingRegister> pending_registers_;
    uint64_t stats_generation_ = 0;                          // the segment the drop counters go to
    DropLog drops_;
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
