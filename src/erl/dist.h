// dist.h: the Erlang distribution protocol after the handshake, as bytes: packets
// ([u32 length]['p'][control][message]), the control messages the link sends and
// reads, and a writer for the external term format that can splice bytes it never
// decodes (a client's arguments). Pure functions; every read is bounds-checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "bert/term.h"

namespace bertd::erl {

// Control message operations (erl_dist_protocol).
enum DistOp : int {
    kLink = 1,
    kSend = 2,
    kExit = 3,
    kUnlink = 4,
    kRegSend = 6,
    kSendTT = 12,
    kRegSendTT = 16,
    kMonitorP = 19,
    kDemonitorP = 20,
    kMonitorPExit = 21,
    kSendSender = 22,
    kSpawnRequest = 29,
    kSpawnRequestTT = 30,
    kSpawnReply = 31,
};

// Distribution flags the link adds to what ei announces in the handshake: with
// DFLAG_SPAWN, Erlang nodes use erpc (and so rpc:call) on bertd instead of
// refusing with notsup.
constexpr uint64_t kDflagSpawn = uint64_t(1) << 32;

// Appends external-term-format bytes to a string. No version byte unless asked.
class Ext {
public:
    explicit Ext(std::string& out) : out_(out) {}
    Ext& version();
    Ext& tuple(size_t arity);
    Ext& list(size_t n);  // LIST_EXT header: write n elements, then the tail (nil())
    Ext& nil();
    Ext& atom(std::string_view name);  // UTF-8 atom
    Ext& binary(std::string_view bytes);
    Ext& binary(std::string_view prefix, std::string_view rest);  // one binary of both parts
    Ext& integer(int64_t v);
    Ext& uinteger(uint64_t v);
    Ext& pid(const bert::Pid& p);
    Ext& ref(const bert::Ref& r);
    Ext& term(const bert::Term& t);    // any term (through the codec), without version byte
    Ext& raw(std::string_view bytes);  // bytes of one already encoded term, without version byte

private:
    void u8(uint8_t v) { out_.push_back(char(v)); }
    void u16(uint16_t v);
    void u32(uint32_t v);
    std::string& out_;
};

// Starts a pass-through packet in `out` (length to be filled, then 'p'); returns
// where it starts. finish_packet() writes the length.
size_t begin_packet(std::string& out);
void finish_packet(std::string& out, size_t start);
// A tick: a packet of length 0.
void append_tick(std::string& out);

// Returns the offset just past the term starting at `off` (no version byte), or
// npos if it is malformed or deeper than `max_depth`. Compressed terms are refused.
size_t skip_term(std::string_view buf, size_t off, int max_depth = 200);

struct Packet {
    bert::Term control;        // the decoded control tuple
    std::string_view message;  // the message term with its version byte; empty if none
};

// Splits a packet body (after the length) into control and message. False with a
// reason for anything but a well-formed pass-through packet.
bool parse_packet(std::string_view body, Packet& out, std::string& error);

// The message of a SEND packet ({2, Unused, ToPid}), found without decoding the
// control tuple (the hot path: answers to the link's calls, messages to workers).
// With `to`, also the addressee's number, serial and creation (not its node).
bool send_message(std::string_view body, std::string_view& message, bert::Pid* to = nullptr);

// Reads a pid (PID_EXT or NEW_PID_EXT) at `off`: number, serial, creation (not the
// node); returns the offset past it, or npos.
size_t read_pid(std::string_view buf, size_t off, bert::Pid& out);

// Reads a message {Tag, Result} whose Tag is a non-negative integer; `result` is
// the Result term's bytes (no version byte; not validated, they run to the end of
// the message). False when the message does not start that way.
bool parse_tagged(std::string_view message, uint64_t& tag, std::string_view& result);

// If `term` (no version byte) is a binary, its bytes.
bool binary_bytes(std::string_view term, std::string_view& bytes);

}  // namespace bertd::erl
