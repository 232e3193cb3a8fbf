// print_text.h: the pieces of ~p text shared by the Term printer (printer.cc) and
// the printer of encoded bytes (print_bytes.cc), so that both write the same text.
// Internal to src/bert. Nothing here writes past the Sink's budget.
//
// The rules of ~p (latin-1 mode, OTP 25), found by comparing with erl (tests/diff):
// - floats: the shortest digits that read back exactly; written fixed ("123.0",
//   "0.001") when that is no longer than the scientific form ("1.0e3", "1.2345e-4";
//   a tie goes to fixed), except that |x| >= 2^53 is always scientific.
// - strings: a proper list of characters 32..126, 160..255 and \n \r \t \v \b \f \e
//   prints as "..."; inside, " and \ and those seven are escaped. Binaries the same
//   way as <<"...">>, else as bytes <<1,2>>.
// - atoms: bare when they start with a-z or ß..ÿ (not ÷), go on with letters
//   (A-Z, a-z, À..ÿ but × and ÷), digits, _ and @, and are not reserved words;
//   else quoted, with \' \\ \n.. \e, \d for 127, \OOO for other controls and
//   128..159, \x{HEX} beyond 255, and latin-1 letters as they are.
// - funs, as erlang:fun_to_list/1 shows them: fun M:F/A, the atoms in the VM's
//   own syntax (no '@' in bare atoms, reserved words bare, \OOO for controls and
//   128..159, other characters as they are); closures #Fun<Module.Index.Uniq>.
//   One difference: fun_to_list/1 gives the UTF-8 bytes of a character above 127
//   as if each were a character, so erl's text shows such atoms encoded twice;
//   bertd writes the characters once.
// - bit strings: always bytes, then the last bits as Value:Bits: <<5,1:3>>.
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "bert/codec.h"
#include "bert/term.h"

namespace bert::detail {

// Appends to the caller's string and stops taking text once one byte more than the
// budget has arrived, which is how it knows the text had to be cut.
class Sink {
public:
    Sink(std::string& out, size_t max_bytes)
        : out_(out),
          start_(out.size()),
          cap_(max_bytes == 0 ? std::numeric_limits<size_t>::max() : max_bytes + 1) {}

    bool full() const { return full_; }
    bool limited() const { return cap_ != std::numeric_limits<size_t>::max(); }
    // How many more bytes fit before the text is known to be cut.
    size_t room() const { return full_ ? 0 : cap_ - (out_.size() - start_); }

    void put(char c) {
        if (full_) return;
        out_.push_back(c);
        if (out_.size() - start_ >= cap_) full_ = true;
    }
    void put(std::string_view s) {
        if (full_) return;
        size_t r = room();
        if (s.size() >= r) {
            out_.append(s.substr(0, r));
            full_ = true;
        } else {
            out_.append(s);
        }
    }
    // A code point 0..255 (a latin-1 character) as UTF-8.
    void put_latin1(unsigned c) {
        if (c < 0x80) {
            put(char(c));
        } else {
            char b[2] = {char(0xC0 | (c >> 6)), char(0x80 | (c & 0x3F))};
            put(std::string_view(b, 2));
        }
    }
    void put_int(int64_t v) {
        char b[24];
        auto r = std::to_chars(b, b + sizeof b, v);
        put(std::string_view(b, size_t(r.ptr - b)));
    }
    void put_uint(uint64_t v) {
        char b[24];
        auto r = std::to_chars(b, b + sizeof b, v);
        put(std::string_view(b, size_t(r.ptr - b)));
    }

    // Cuts an over-long text to at most max_bytes, ending in "...", never inside a
    // UTF-8 sequence.
    void finish(size_t max_bytes) {
        if (!full_ || max_bytes == 0) return;
        if (out_.size() - start_ <= max_bytes && !cut_) return;
        size_t keep = max_bytes >= 3 ? max_bytes - 3 : 0;
        size_t end = start_ + std::min(keep, out_.size() - start_);
        while (end > start_ && (static_cast<unsigned char>(out_[end]) & 0xC0) == 0x80) --end;
        out_.resize(end);
        out_.append(std::string_view("...").substr(0, std::min<size_t>(3, max_bytes)));
    }
    // The text is cut even if what was written so far fits (a part was skipped).
    void cut() {
        cut_ = true;
        full_ = true;
    }

private:
    std::string& out_;
    size_t start_;
    size_t cap_;
    bool full_ = false;
    bool cut_ = false;
};

// io_lib:printable_latin1_list's test for one character.
bool printable_latin1(int64_t c);
// One character inside '...' or "..." as ~p escapes it.
void put_quoted_char(uint32_t c, char quote, Sink& out);
// Whether the first `look` bytes (or all) would print as text.
bool binary_is_string(std::string_view bytes, size_t look);

void print_float(double d, Sink& out);
// A bignum; `magnitude` is little-endian without high zero bytes.
void print_big(bool negative, std::string_view magnitude, Sink& out);
void print_atom(std::string_view name, Sink& out);  // UTF-8 name
// A binary. A cut print may pass only a prefix of the bytes, as long as it
// holds more than out.room() of them.
void print_binary(std::string_view bytes, Sink& out);
void print_bits(std::string_view bytes, unsigned bits, Sink& out);  // a BitBinary's fields
void print_id(const Term& t, Sink& out);                            // a pid, ref or port
void print_fun(const Fun& f, Sink& out);
void print_fun_info(const FunInfo& f, Sink& out);

}  // namespace bert::detail
