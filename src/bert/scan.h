// scan.h: reading encoded terms in place, without building Terms: a validating walk
// with decode()'s checks and errors (check, rewrite_floats), and the reads the byte
// printer and the byte-level term order need. Internal to src/bert. Every read is
// bounds-checked; memory stays O(depth) beyond what a caller keeps.
#pragma once

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bert/codec.h"
#include "bert/decoder.h"
#include "bert/wire.h"

namespace bert::detail {

// The bytes of one encoded term: all there (a plain term, or one inflated whole),
// or inflated from compressed data only as far as reading reaches.
class Input {
public:
    explicit Input(std::string_view bytes);
    // Compressed data that must inflate to `declared` bytes.
    Input(const unsigned char* zdata, size_t zsize, size_t declared);
    ~Input();
    Input(const Input&) = delete;
    Input& operator=(const Input&) = delete;

    size_t size() const { return size_; }  // every byte of the term
    // Makes bytes [0, min(end, size())) readable; false when that is less than
    // `end`, or when inflating failed (inflate_error() then says why).
    bool have(size_t end) { return end <= ready_ || more(end); }
    const unsigned char* data() const { return p_; }  // valid until the next have()
    size_t ready() const { return ready_; }
    const std::string& inflate_error() const { return error_; }

private:
    bool more(size_t end);

    const unsigned char* p_;
    size_t size_;
    size_t ready_;
    std::string buf_;  // inflated bytes
    z_stream zs_{};
    bool lazy_ = false;
    std::string error_;
};

// The head of one term, as decode() would see it after following empty LIST_EXT
// cells to what they hold: enough to print or order it without building it.
struct Head {
    enum class Kind : uint8_t { Int, Big, Float, Atom, Binary, Bits, Tuple, Nil, List, Map, Id, Fun };
    Kind kind = Kind::Nil;
    size_t at = 0;     // where this term's own bytes start
    size_t body = 0;   // Tuple, Map: first element; Binary, Bits, Big: first data byte
    size_t count = 0;  // Tuple: arity; Map: pairs; Binary, Bits: bytes; Big: magnitude bytes
    size_t end = 0;    // leaves and Nil: just past the term
    size_t depth = 0;  // nesting, as decode() counts it
    int64_t i = 0;
    double f = 0;
    bool negative = false;
    unsigned bits = 0;             // Bits: used bits of the last byte
    Term leaf;                     // Atom, Id (pid, ref, port): the decoded value
    std::unique_ptr<FunInfo> fun;  // Fun: its fields (body: its first free variable)
};

class Scanner;

// A list's elements in order, as decode() joins them: LIST_EXT cells, then a tail
// that is another LIST_EXT, a STRING_EXT (its bytes are elements) or NIL, else an
// improper tail.
class ListCursor {
public:
    enum class Step : uint8_t { Element, Byte, Tail, End, Error };
    ListCursor(size_t at, size_t depth) : pos_(at), depth_(depth) {}
    // Element: the next element starts at `pos`, and advance(its end) must follow;
    // Byte: the next element is the integer `byte`; Tail: the improper tail starts
    // at `pos`; End: a proper end (then pos is past the list); Error: s.error says.
    Step next(Scanner& s, size_t& pos, unsigned& byte);
    void advance(size_t end) { pos_ = end; }
    size_t depth() const { return depth_ + 1; }  // of the elements

private:
    size_t pos_;
    size_t depth_;
    size_t left_ = 0;
    bool started_ = false;
    bool in_string_ = false;
};

class Scanner {
public:
    Scanner(Input& in, const Limits& limits) : in_(in), limits_(limits) {}

    DecodeError error;
    // Whether walks look for duplicate map keys (decode() does; the printer, which
    // only shows the keys, does not, to keep its memory bound).
    bool check_keys = true;

    // Walks the term at `pos` and everything in it with decode()'s checks and
    // errors (the memory limits aside), leaving `pos` just past it.
    bool skip(size_t& pos, size_t depth) { return walk(pos, depth); }
    // The same, appending the term's bytes to `out` with every float in form `to`;
    // `changed` counts the floats whose form changed.
    bool copy(size_t& pos, size_t depth, std::string& out, FloatForm to, size_t& changed);

    // Reads the head of the term at `pos` with decode()'s checks of what it reads.
    bool head(size_t pos, size_t depth, Head& h);
    // Erlang's order of two terms already walked by skip() (so they are sound);
    // when equal, their ends are set.
    int compare(size_t a, size_t b, size_t depth, bool exact, size_t& end_a, size_t& end_b);

    Input& input() { return in_; }
    const Limits& limits() const { return limits_; }

    // Decoder-worded failures, shared with ListCursor and the printer.
    bool need(size_t pos, size_t n, const char* what);
    bool enter(size_t depth, size_t pos);
    bool fail_at(const std::string& message, size_t at);
    // The bytes [pos, pos + n), which need() made readable.
    const unsigned char* at(size_t pos) const { return in_.data() + pos; }

private:
    bool walk(size_t& pos, size_t depth);
    bool walk_big(size_t& pos);
    bool walk_tuple(size_t& pos, size_t depth);
    bool walk_list(size_t& pos, size_t depth);
    bool walk_string(size_t& pos);
    bool walk_binary(size_t& pos);
    bool walk_bits(size_t& pos);
    bool walk_map(size_t& pos, size_t depth);
    bool walk_fun(size_t& pos, size_t depth);
    bool walk_float(size_t& pos);
    bool walk_leaf(size_t& pos);
    bool keys_unique(size_t at, std::vector<size_t>& keys, size_t depth);
    bool leaf_head(size_t pos, Head& h);
    bool big_head(size_t pos, Head& h);
    bool container_head(size_t pos, Head& h);
    bool binary_head(size_t pos, Head& h);
    bool fun_head(size_t pos, Head& h);
    bool read_leaf(size_t pos, Term& out, size_t& end);
    bool fail_tag(unsigned tag, size_t pos);
    void flush(size_t to);

    int compare_heads(const Head& x, const Head& y, bool exact, size_t& end_a, size_t& end_b);
    int compare_lists(const Head& x, const Head& y, bool exact, size_t& end_a, size_t& end_b);
    int compare_maps(const Head& x, const Head& y, bool exact, size_t& end_a, size_t& end_b);
    // A map's (key, value) positions in key order and its end, found once per Scanner.
    struct MapOrder {
        std::vector<std::pair<size_t, size_t>> pairs;
        size_t end = 0;
    };
    const MapOrder& map_order(const Head& h);
    int compare_seq(size_t a, size_t b, size_t n, size_t depth, bool exact, size_t& end_a, size_t& end_b,
                    size_t ea, size_t eb);
    bool element(ListCursor& c, ListCursor::Step s, size_t pos, unsigned byte, Head& h);

    Input& in_;
    const Limits& limits_;
    std::string* out_ = nullptr;
    FloatForm to_ = FloatForm::New;
    size_t changed_ = 0;
    size_t copied_ = 0;  // copy(): the input's bytes before this are out
    // compare_maps()'s sorted pairs by the map's first byte. At most 16 bytes per pair of
    // a map that is compared, less than decode() spends on the same map's terms.
    std::unordered_map<size_t, MapOrder> map_orders_;
};

}  // namespace bert::detail
