// test_child_output.cc: a worker's stderr as the master reads it, through a real
// pipe: whole lines passed on, over-long lines cut, a last line without a newline
// kept at end of file, and only the last few lines kept for the report.
#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "core/child_output.h"

#include <CppUTest/TestHarness.h>

using bertd::ChildOutput;
using bertd::Fd;

TEST_GROUP(ChildOutput) {
    ChildOutput out;
    Fd writer;
    std::vector<std::string> lines;

    void setup() override {
        int p[2];
        CHECK_EQUAL(0, pipe2(p, O_CLOEXEC));
        out.attach(Fd(p[0]));
        writer.reset(p[1]);
    }
    void say(const std::string& text) {
        CHECK_EQUAL(ssize_t(text.size()), ::write(writer.get(), text.data(), text.size()));
    }
    void pump() {
        out.pump([&](std::string_view l) { lines.emplace_back(l); });
    }
};

TEST(ChildOutput, whole_lines_are_passed_on_and_a_partial_one_waits_for_its_end) {
    say("first\r\nsecond\nthi");
    pump();
    CHECK_EQUAL(2u, lines.size());
    STRCMP_EQUAL("first", lines[0].c_str());
    STRCMP_EQUAL("second", lines[1].c_str());
    say("rd\n");
    pump();
    CHECK_EQUAL(3u, lines.size());
    STRCMP_EQUAL("third", lines[2].c_str());
    CHECK(out.fd() >= 0);  // nothing would block: the pipe stays
}

TEST(ChildOutput, a_last_line_without_a_newline_is_passed_on_at_end_of_file) {
    say("Traceback\nNameError: nope");
    writer.reset();
    pump();
    CHECK_EQUAL(2u, lines.size());
    STRCMP_EQUAL("NameError: nope", lines[1].c_str());
    CHECK_EQUAL(-1, out.fd());
}

TEST(ChildOutput, an_over_long_line_is_cut_once_and_the_next_line_is_whole) {
    say(std::string(5000, 'x') + "\nnext\n");
    pump();
    CHECK_EQUAL(2u, lines.size());
    CHECK_EQUAL(ChildOutput::kMaxLine + 3, lines[0].size());
    STRCMP_EQUAL("...", lines[0].substr(ChildOutput::kMaxLine).c_str());
    STRCMP_EQUAL("next", lines[1].c_str());
}

TEST(ChildOutput, only_the_last_lines_are_kept_for_the_report) {
    for (int i = 0; i < 20; ++i) say("line " + std::to_string(i) + "\n");
    pump();
    STRCMP_EQUAL("line 15 | line 16 | line 17 | line 18 | line 19", out.tail().c_str());
}

TEST(ChildOutput, a_pump_reads_no_more_than_its_budget) {
    say(std::string(100, 'a') + "\n" + std::string(100, 'b') + "\n");
    out.pump([&](std::string_view l) { lines.emplace_back(l); }, 101);
    CHECK_EQUAL(1u, lines.size());
    pump();
    CHECK_EQUAL(2u, lines.size());
}
