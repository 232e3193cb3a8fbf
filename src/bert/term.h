// term.h: the Erlang term value that every part of bertd passes around.
// It owns its data, compares structurally, and knows nothing of bytes on the wire
// but a fun's, which it carries unread (codec.h encodes, decodes and reads funs,
// printer.h and parser.h speak Erlang syntax).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace bert {

class Term;

// An integer outside int64_t. Magnitude is little-endian base-256 with no
// trailing zero bytes, as in Erlang's SMALL_BIG/LARGE_BIG. Integers that fit in
// int64_t are always held as int64_t, so equal integers compare equal.
struct BigInt {
    bool negative = false;
    std::string magnitude;
    bool operator==(const BigInt&) const = default;
};

// Atom text is UTF-8 (latin-1 atoms from the wire are converted on decode).
struct Atom {
    std::string name;
    bool operator==(const Atom&) const = default;
};

struct Binary {
    std::string bytes;
    bool operator==(const Binary&) const = default;
};

// A bitstring whose size is not a whole number of bytes, such as <<5,1:3>>: `bytes`
// holds every byte, the last one partly used: its `bits` high bits (1 to 7) count and
// the others are zero. Term's constructor keeps it so; a bitstring of whole bytes
// becomes a Binary.
struct BitBinary {
    std::string bytes;
    uint8_t bits = 0;
    bool operator==(const BitBinary&) const = default;
};

// A fun, which bertd carries and cannot run: its external-format bytes from the tag
// on, as term_to_binary/1 writes them (EXPORT_EXT for fun M:F/A, NEW_FUN_EXT for a
// closure with its environment). codec.h makes exports (export_fun) and reads
// funs (fun_info); two funs are equal when their bytes are.
struct Fun {
    std::string bytes;
    bool operator==(const Fun&) const = default;
};

struct Tuple {
    std::vector<Term> items;
    bool operator==(const Tuple&) const;
};

// A list. An empty proper list is nil ([]). When `improper` is set the last
// element of `items` is the tail (so [1|2] is items {1, 2}, improper), which
// keeps Term copyable without a pointer to the tail.
struct List {
    std::vector<Term> items;
    bool improper = false;
    bool operator==(const List&) const;
};

// Pair order does not matter to ==; the codec keeps pairs in compare_exact key order.
struct Map {
    std::vector<std::pair<Term, Term>> pairs;
    bool operator==(const Map&) const;
};

// Distribution identifiers; bertd only carries them (the Erlang link needs them).
struct Pid {
    std::string node;
    uint32_t num = 0, serial = 0, creation = 0;
    bool operator==(const Pid&) const = default;
};
struct Ref {
    std::string node;
    std::vector<uint32_t> ids;
    uint32_t creation = 0;
    bool operator==(const Ref&) const = default;
};
struct Port {
    std::string node;
    uint64_t id = 0;
    uint32_t creation = 0;
    bool operator==(const Port&) const = default;
};

class Term {
public:
    enum class Kind : uint8_t {
        Int,
        Big,
        Float,
        Atom,
        Binary,
        Tuple,
        List,
        Map,
        Pid,
        Ref,
        Port,
        Fun,
        BitBinary
    };
    // Alternatives are in the same order as Kind.
    using Value = std::variant<int64_t, BigInt, double, bert::Atom, bert::Binary, bert::Tuple, bert::List,
                               bert::Map, bert::Pid, bert::Ref, bert::Port, bert::Fun, bert::BitBinary>;

    Term() : v_(bert::List{}) {}  // []
    Term(int64_t i) : v_(i) {}
    Term(int i) : v_(int64_t{i}) {}
    Term(double d) : v_(d) {}
    Term(BigInt b);  // normalised: a value that fits int64_t becomes Int
    Term(bert::Atom a) : v_(std::move(a)) {}
    Term(bert::Binary b) : v_(std::move(b)) {}
    Term(bert::Tuple t) : v_(std::move(t)) {}
    Term(bert::List l) : v_(std::move(l)) {}
    Term(bert::Map m) : v_(std::move(m)) {}
    Term(bert::Pid p) : v_(std::move(p)) {}
    Term(bert::Ref r) : v_(std::move(r)) {}
    Term(bert::Port p) : v_(std::move(p)) {}
    Term(bert::Fun f) : v_(std::move(f)) {}
    Term(bert::BitBinary b);  // normalised: unused bits zeroed; whole bytes become Binary

    static Term atom(std::string_view name) { return bert::Atom{std::string(name)}; }
    static Term binary(std::string_view bytes) { return bert::Binary{std::string(bytes)}; }
    static Term tuple(std::vector<Term> items) { return bert::Tuple{std::move(items)}; }
    static Term list(std::vector<Term> items) { return bert::List{std::move(items), false}; }
    static Term nil() { return Term(); }
    // A list of byte values, as Erlang's "abc".
    static Term string(std::string_view chars);

    Kind kind() const { return static_cast<Kind>(v_.index()); }
    const Value& value() const { return v_; }
    Value& value() { return v_; }

    bool is_int() const { return kind() == Kind::Int; }
    bool is_atom() const { return kind() == Kind::Atom; }
    bool is_atom(std::string_view name) const;
    bool is_binary() const { return kind() == Kind::Binary; }
    bool is_fun() const { return kind() == Kind::Fun; }
    bool is_tuple() const { return kind() == Kind::Tuple; }
    bool is_tuple(size_t arity) const;
    bool is_list() const { return kind() == Kind::List; }
    bool is_nil() const;  // []
    bool is_proper_list() const;

    // Accessors; each requires the matching kind (checked by the caller).
    int64_t as_int() const { return std::get<int64_t>(v_); }
    double as_float() const { return std::get<double>(v_); }
    const std::string& atom_name() const { return std::get<bert::Atom>(v_).name; }
    const std::string& bytes() const { return std::get<bert::Binary>(v_).bytes; }
    const std::vector<Term>& items() const;  // tuple or list elements
    std::vector<Term>& items();
    const Term& operator[](size_t i) const { return items()[i]; }
    size_t size() const { return items().size(); }

    bool operator==(const Term& o) const { return v_ == o.v_; }

private:
    Value v_;
};

// Erlang's standard term order (number < atom < reference < fun < port < pid <
// tuple < map < nil < list < bitstring); returns <0, 0 or >0. Integers and
// floats compare by value (exactly, even beyond 2^53), ties broken integer
// first so that the order is total. As in OTP 25: pids order by serial, number,
// node, creation; refs and ports by node, creation, then id (ref ids from the
// last word down); lists element by element, then tail against tail; maps by
// size, then keys in compare_exact order, then values in key order; bitstrings
// bit by bit, then by length; closures before exports, closures by module,
// index, old uniq, free variable count, then the variables, exports by module,
// function, arity.
int compare(const Term& a, const Term& b);

// The order OTP 25 keeps map keys in, and the order term_to_binary/1 writes maps
// of up to 32 keys in: compare's order, except that at any depth every integer
// sorts before every float (2 < 1.5 here). Also the duplicate-key test.
int compare_exact(const Term& a, const Term& b);

// BERT complex types ({bert, ...} tuples), both ways.
namespace complex {
Term nil();                           // {bert, nil}
Term boolean(bool v);                 // {bert, true} / {bert, false}
Term dict(std::vector<std::pair<Term, Term>> pairs);  // {bert, dict, [{K, V}, ...]}
Term time(int64_t mega, int64_t sec, int64_t micro);  // {bert, time, Mega, Sec, Micro}
Term regex(std::string_view source, std::vector<std::string> options);  // {bert, regex, <<Src>>, [Opts]}

struct Time { int64_t mega = 0, sec = 0, micro = 0; };
struct Regex { std::string source; std::vector<std::string> options; };

bool is_nil(const Term& t);
std::optional<bool> as_boolean(const Term& t);
std::optional<std::vector<std::pair<Term, Term>>> as_dict(const Term& t);
std::optional<Time> as_time(const Term& t);
std::optional<Regex> as_regex(const Term& t);
}  // namespace complex

}  // namespace bert
