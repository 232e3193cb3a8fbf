// bertc.cc: the command-line BERT-RPC client: one call or cast with arguments in Erlang syntax,
// the reply in Erlang syntax or JSON on stdout, errors on stderr with an exit status per error
// type. It never prints a partial reply: output is written only once the whole answer is in.
// --stream-in / --stream-out move a file through a BERT-RPC 1.0 stream in bounded memory; a
// --stream-out file of a request that failed is removed, never left half written.
#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "bert/parser.h"
#include "bert/printer.h"
#include "bertd/client.h"

namespace {

using bert::Term;

// Exit statuses, one per kind of failure (documented in --help and the report to the man page).
enum Exit : int {
    kOk = 0,
    kUsage = 1,       // bad command line or an argument that is not an Erlang term
    kConnection = 2,  // cannot connect, connection broken, or timeout
    kProtocol = 3,    // protocol error answer, or an answer that is not BERT-RPC
    kServer = 4,      // server error answer (no such module / function, ...)
    kUser = 5,        // user error answer (the handler raised)
    kProxy = 6,       // proxy error answer
};

constexpr const char* kUsageText =
    "usage: bertc [-h HOST] [-p PORT] [--priority high|low] [--timeout S] [--json]\n"
    "             [--float-format new|ernie] [--stream-in FILE] [--stream-out FILE]\n"
    "             call|cast MODULE FUNCTION [ARG ...]\n"
    "\n"
    "Sends one BERT-RPC call or cast to a bertd (or any BERT-RPC server) and prints the reply.\n"
    "\n"
    "  -h, --host HOST       server address (default 127.0.0.1)\n"
    "  -p, --port PORT       server port (default 8000)\n"
    "      --priority P      high or low: sends {info, priority, [P]} first\n"
    "      --timeout S       seconds to wait for connecting and for the whole answer\n"
    "                        (decimals allowed; default: wait for ever)\n"
    "      --json            print the reply as JSON instead of Erlang syntax\n"
    "      --float-format F  how floats in the arguments are sent: new (NEW_FLOAT_EXT, the\n"
    "                        default) or ernie (FLOAT_EXT, for servers and handlers on Ernie's\n"
    "                        libraries, such as the bert gem); replies are read in either form\n"
    "      --stream-in FILE  send FILE's bytes as a streamed request (- for standard input)\n"
    "      --stream-out FILE write a streamed answer's bytes to FILE (- for standard output,\n"
    "                        which then carries no reply line); a call only\n"
    "      --help            this text\n"
    "\n"
    "Each ARG is one Erlang term: bertc call calc add 1 2, bertc call store put '<<\"k\">>' '{a,[1,2]}'.\n"
    "An ARG @FILE reads the term's text from FILE (@- from standard input).\n"
    "A call prints the reply on one line; a cast prints nothing once the server took it.\n"
    "Streams (BERT-RPC 1.0) are read and written chunk by chunk: memory stays small whatever\n"
    "their size. The timeout then bounds each chunk. If the request fails, the --stream-out\n"
    "FILE is removed.\n"
    "\n"
    "JSON: integers (any size) are numbers; floats are numbers with a '.' or an exponent;\n"
    "lists are arrays; a binary that is UTF-8 text is a string; {bert,nil}, {bert,true} and\n"
    "{bert,false} are null, true and false. Everything else is an object with one key naming\n"
    "the type: {\"atom\":\"ok\"}, {\"tuple\":[...]}, {\"binary\":\"<base64>\"} (other binaries),\n"
    "{\"dict\":[[K,V],...]} ({bert,dict,...}), {\"map\":[[K,V],...]}, {\"improper_list\":[E1,...,Tail]},\n"
    "{\"pid\":\"...\"}, {\"ref\":\"...\"}, {\"port\":\"...\"}, {\"fun\":\"fun m:f/1\"},\n"
    "{\"bitstring\":\"<<5,1:3>>\"} (the last three in Erlang syntax).\n"
    "\n"
    "Exit status: 0 ok, 1 usage or bad argument, 2 connection failed or timed out, 3 protocol\n"
    "error (or an answer that is not BERT-RPC), 4 server error, 5 user error, 6 proxy error.\n"
    "Errors are written to standard error.\n";

struct Args {
    std::string host = "127.0.0.1";
    uint16_t port = 8000;
    bertd::Priority priority = bertd::Priority::Default;
    double timeout = 0;
    bool json = false;
    bool cast = false;
    bert::FloatForm float_format = bert::FloatForm::New;
    std::string stream_in, stream_out;  // file names; "-" for stdin / stdout
    std::string module, function;
    std::vector<std::string> terms;
};

struct UsageError {
    std::string message;
};

bool parse_port(std::string_view s, uint16_t& out) {
    unsigned v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size() || v == 0 || v > 65535) return false;
    out = static_cast<uint16_t>(v);
    return true;
}

// What follows the options, from argv[i]: call|cast MODULE FUNCTION [ARG ...].
void parse_operands(int argc, char** argv, int i, Args& a) {
    if (i >= argc) throw UsageError{"call or cast expected"};
    std::string_view kind = argv[i++];
    if (kind != "call" && kind != "cast")
        throw UsageError{"call or cast expected, not '" + std::string(kind) + "'"};
    a.cast = kind == "cast";
    if (argc - i < 2) throw UsageError{"MODULE and FUNCTION expected"};
    a.module = argv[i++];
    a.function = argv[i++];
    if (a.module.empty() || a.function.empty()) throw UsageError{"MODULE and FUNCTION must not be empty"};
    for (; i < argc; ++i) a.terms.emplace_back(argv[i]);
}

bertd::Priority parse_priority(const std::string& v) {
    if (v == "high") return bertd::Priority::High;
    if (v == "low") return bertd::Priority::Low;
    throw UsageError{"bad priority '" + v + "' (high or low)"};
}

bert::FloatForm parse_float_format(const std::string& v) {
    if (v == "new") return bert::FloatForm::New;
    if (v == "ernie") return bert::FloatForm::Ernie;
    throw UsageError{"bad float format '" + v + "' (new or ernie)"};
}

// Returns true when --help was asked for.
bool parse_command_line(int argc, char** argv, Args& a) {
    int i = 1;
    auto value = [&](std::string_view opt, std::string_view arg) -> std::string {
        // --opt=value or --opt value
        if (auto eq = arg.find('='); arg.substr(0, 2) == "--" && eq != std::string_view::npos)
            return std::string(arg.substr(eq + 1));
        if (i + 1 >= argc) throw UsageError{std::string(opt) + " needs a value"};
        return argv[++i];
    };
    for (; i < argc; ++i) {
        std::string_view arg = argv[i];
        std::string_view name = arg.substr(0, arg.find('='));
        if (arg == "--help") return true;
        if (arg == "--") {
            ++i;
            break;
        }
        if (arg.empty() || arg[0] != '-') break;
        if (name == "-h" || name == "--host") {
            a.host = value(name, arg);
            if (a.host.empty()) throw UsageError{"the host is empty"};
        } else if (name == "-p" || name == "--port") {
            std::string v = value(name, arg);
            if (!parse_port(v, a.port)) throw UsageError{"bad port '" + v + "' (1-65535)"};
        } else if (name == "--priority") {
            a.priority = parse_priority(value(name, arg));
        } else if (name == "--timeout") {
            std::string v = value(name, arg);
            char* end = nullptr;
            a.timeout = std::strtod(v.c_str(), &end);
            if (v.empty() || *end != '\0' || !std::isfinite(a.timeout) || a.timeout < 0 || a.timeout > 1e9)
                throw UsageError{"bad timeout '" + v + "' (seconds, e.g. 2.5)"};
        } else if (arg == "--json") {
            a.json = true;
        } else if (name == "--float-format") {
            a.float_format = parse_float_format(value(name, arg));
        } else if (name == "--stream-in" || name == "--stream-out") {
            std::string& file = name == "--stream-in" ? a.stream_in : a.stream_out;
            if ((file = value(name, arg)).empty())
                throw UsageError{std::string(name) + " needs a file name (or -)"};
        } else {
            throw UsageError{"unknown option '" + std::string(arg) + "'"};
        }
    }
    parse_operands(argc, argv, i, a);
    return false;
}

// The text of an @FILE argument; "@-" is standard input.
std::string read_source(const std::string& path) {
    std::string text;
    if (path == "-") {
        std::ostringstream ss;
        ss << std::cin.rdbuf();
        text = ss.str();
    } else {
        std::ifstream in(path, std::ios::binary);
        if (!in) throw UsageError{"cannot read '" + path + "': " + std::strerror(errno)};
        text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    return text;
}

std::vector<Term> parse_terms(const std::vector<std::string>& texts) {
    std::vector<Term> terms;
    terms.reserve(texts.size());
    for (size_t k = 0; k < texts.size(); ++k) {
        const std::string& s = texts[k];
        std::string from_file;
        std::string_view text = s;
        if (!s.empty() && s[0] == '@') {
            from_file = read_source(s.substr(1));
            text = from_file;
        }
        Term t;
        if (bert::ParseError err = bert::parse(text, t)) {
            std::string shown =
                text.size() > 60 ? std::string(text.substr(0, 57)) + "..." : std::string(text);
            throw UsageError{"argument " + std::to_string(k + 1) + " (" + shown +
                             ") is not an Erlang term: " + err.str()};
        }
        terms.push_back(std::move(t));
    }
    return terms;
}

// --- JSON --------------------------------------------------------------------------------

// Strict UTF-8: shortest forms only, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= s.size()) return false;  // the sequence is cut short
        for (size_t k = 1; k <= n; ++k) {
            unsigned char b = static_cast<unsigned char>(s[i + k]);
            if ((b & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (b & 0x3F);
        }
        static constexpr uint32_t min_for_len[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n + 1;
    }
    return true;
}

void json_string(std::string_view s, std::string& out) {
    static constexpr char hex[] = "0123456789abcdef";
    out.push_back('"');
    for (char ch : s) {
        unsigned char c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    out += "\\u00";
                    out.push_back(hex[c >> 4]);
                    out.push_back(hex[c & 15]);
                } else {
                    out.push_back(ch);
                }
        }
    }
    out.push_back('"');
}

void base64(std::string_view bytes, std::string& out) {
    static constexpr char table[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 3 <= bytes.size(); i += 3) {
        uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) |
                     uint8_t(bytes[i + 2]);
        out.push_back(table[v >> 18]);
        out.push_back(table[(v >> 12) & 63]);
        out.push_back(table[(v >> 6) & 63]);
        out.push_back(table[v & 63]);
    }
    if (size_t rest = bytes.size() - i; rest > 0) {
        uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
        if (rest == 2) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
        out.push_back(table[v >> 18]);
        out.push_back(table[(v >> 12) & 63]);
        out.push_back(rest == 2 ? table[(v >> 6) & 63] : '=');
        out.push_back('=');
    }
}

void json(const Term& t, std::string& out);

void json_array(const std::vector<Term>& items, std::string& out) {
    out.push_back('[');
    for (size_t k = 0; k < items.size(); ++k) {
        if (k) out.push_back(',');
        json(items[k], out);
    }
    out.push_back(']');
}

// {"tag": <value written by fill>}
template <typename Fill>
void tagged(std::string_view tag, std::string& out, Fill fill) {
    out += "{\"";
    out += tag;
    out += "\":";
    fill();
    out.push_back('}');
}

void json_pairs(const std::vector<std::pair<Term, Term>>& pairs, std::string& out) {
    out.push_back('[');
    for (size_t k = 0; k < pairs.size(); ++k) {
        if (k) out.push_back(',');
        out.push_back('[');
        json(pairs[k].first, out);
        out.push_back(',');
        json(pairs[k].second, out);
        out.push_back(']');
    }
    out.push_back(']');
}

void json_float(double d, std::string& out) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, d);  // shortest text that reads back as d
    std::string_view s(buf, size_t(r.ptr - buf));
    out += s;
    if (s.find_first_of(".e") == std::string_view::npos) out += ".0";
}

void json(const Term& t, std::string& out) {
    switch (t.kind()) {
        case Term::Kind::Int: out += std::to_string(t.as_int()); return;
        case Term::Kind::Big: out += bert::to_string(t); return;  // Erlang writes integers as JSON does
        case Term::Kind::Float: return json_float(t.as_float(), out);
        case Term::Kind::Atom: return tagged("atom", out, [&] { json_string(t.atom_name(), out); });
        case Term::Kind::Binary:
            if (valid_utf8(t.bytes())) return json_string(t.bytes(), out);
            return tagged("binary", out, [&] {
                out.push_back('"');
                base64(t.bytes(), out);
                out.push_back('"');
            });
        case Term::Kind::Tuple: {
            if (bert::complex::is_nil(t)) {
                out += "null";
                return;
            }
            if (auto b = bert::complex::as_boolean(t)) {
                out += *b ? "true" : "false";
                return;
            }
            if (auto d = bert::complex::as_dict(t)) return tagged("dict", out, [&] { json_pairs(*d, out); });
            return tagged("tuple", out, [&] { json_array(t.items(), out); });
        }
        case Term::Kind::List:
            if (std::get<bert::List>(t.value()).improper)
                return tagged("improper_list", out, [&] { json_array(t.items(), out); });
            return json_array(t.items(), out);
        case Term::Kind::Map:
            return tagged("map", out, [&] { json_pairs(std::get<bert::Map>(t.value()).pairs, out); });
        case Term::Kind::Pid: return tagged("pid", out, [&] { json_string(bert::to_string(t), out); });
        case Term::Kind::Ref: return tagged("ref", out, [&] { json_string(bert::to_string(t), out); });
        case Term::Kind::Port: return tagged("port", out, [&] { json_string(bert::to_string(t), out); });
        case Term::Kind::Fun: return tagged("fun", out, [&] { json_string(bert::to_string(t), out); });
        case Term::Kind::BitBinary:
            return tagged("bitstring", out, [&] { json_string(bert::to_string(t), out); });
    }
}

// --- running -------------------------------------------------------------------------------

int remote_status(const bertd::rpc::RemoteError& e) {
    if (e.type() == "server") return kServer;
    if (e.type() == "user") return kUser;
    if (e.type() == "proxy") return kProxy;
    return kProtocol;  // protocol, and types this client does not know
}

bool write_out(const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
        ssize_t w = ::write(1, s.data() + done, s.size() - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        done += size_t(w);
    }
    return true;
}

// Where --stream-in reads and --stream-out writes.
struct StreamFiles {
    int in = -1, out = -1;
    std::string out_path;  // a file bertc created: removed when the request fails
    ~StreamFiles() {
        if (in > 0) ::close(in);
        if (out > 1) ::close(out);
    }
    void remove_out() {
        if (!out_path.empty()) ::unlink(out_path.c_str());
    }
};

struct FileError {
    std::string message;
};

void open_streams(const Args& a, StreamFiles& f, bertd::RequestOptions& ro) {
    if (a.cast && !a.stream_out.empty())
        throw UsageError{"--stream-out goes with a call (a cast has no answer)"};
    if (!a.stream_in.empty()) {
        f.in = a.stream_in == "-" ? 0 : ::open(a.stream_in.c_str(), O_RDONLY | O_CLOEXEC);
        if (f.in < 0) throw UsageError{"cannot read '" + a.stream_in + "': " + std::strerror(errno)};
        ro.stream_in = [&f, name = a.stream_in](char* buf, size_t cap) -> size_t {
            for (;;) {
                ssize_t r = ::read(f.in, buf, cap);
                if (r >= 0) return size_t(r);
                if (errno != EINTR) throw FileError{"cannot read '" + name + "': " + std::strerror(errno)};
            }
        };
    }
    if (!a.stream_out.empty()) {
        if (a.stream_out == "-") {
            f.out = 1;
        } else {
            f.out = ::open(a.stream_out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (f.out < 0) throw UsageError{"cannot write '" + a.stream_out + "': " + std::strerror(errno)};
            f.out_path = a.stream_out;
        }
        ro.on_chunk = [&f, name = a.stream_out](std::string_view chunk) {
            size_t done = 0;
            while (done < chunk.size()) {
                ssize_t w = ::write(f.out, chunk.data() + done, chunk.size() - done);
                if (w < 0 && errno == EINTR) continue;
                if (w < 0) throw FileError{"cannot write '" + name + "': " + std::strerror(errno)};
                done += size_t(w);
            }
        };
    }
}

int print_reply(const Args& a, const bertd::Answer& answer) {
    if (!answer.value || (answer.streamed && a.stream_out == "-")) return kOk;
    std::string out;
    if (a.json)
        json(*answer.value, out);
    else
        bert::print(*answer.value, out);
    out.push_back('\n');
    if (!write_out(out)) {
        std::fprintf(stderr, "bertc: cannot write the reply: %s\n", std::strerror(errno));
        return kConnection;
    }
    return kOk;
}

int run(const Args& a) {
    std::vector<Term> terms = parse_terms(a.terms);
    bertd::ClientOptions options;
    auto ms = std::chrono::milliseconds(static_cast<int64_t>(std::ceil(a.timeout * 1000)));
    options.timeout = ms;
    options.connect_timeout = ms;
    options.priority = a.priority;
    options.float_format = a.float_format;
    bertd::Client client(a.host, a.port, options);
    StreamFiles files;
    bertd::RequestOptions ro;
    open_streams(a, files, ro);
    int status = kOk;
    try {
        bertd::Answer answer =
            client.request(a.cast ? "cast" : "call", a.module, a.function, std::move(terms), ro);
        status = a.cast ? kOk : print_reply(a, answer);
    } catch (const FileError& e) {
        std::fprintf(stderr, "bertc: %s\n", e.message.c_str());
        status = kUsage;
    } catch (const bertd::rpc::RemoteError& e) {
        std::fprintf(stderr, "bertc: %s\n", e.what());
        for (const std::string& line : e.backtrace()) std::fprintf(stderr, "  %s\n", line.c_str());
        status = remote_status(e);
    } catch (const bertd::rpc::ConnectionError& e) {
        std::fprintf(stderr, "bertc: %s\n", e.what());
        status = kConnection;
    } catch (const bertd::rpc::InvalidAnswer& e) {
        std::fprintf(stderr, "bertc: %s\n", e.what());
        status = kProtocol;
    }
    if (status != kOk) files.remove_out();
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    Args a;
    try {
        if (parse_command_line(argc, argv, a)) {
            std::fputs(kUsageText, stdout);
            return kOk;
        }
        return run(a);
    } catch (const UsageError& e) {
        std::fprintf(stderr, "bertc: %s\n%s", e.message.c_str(), "Try 'bertc --help'.\n");
        return kUsage;
    }
}
