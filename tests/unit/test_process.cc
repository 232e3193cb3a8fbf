// test_process.cc: how a handler's `command` is handed to /bin/sh: `exec` in front
// only of a plain program and its arguments, as Ernie's open_port({spawn, ...}) ran
// every other form through the shell unchanged.
#include <string>

#include "core/process.h"

#include <CppUTest/TestHarness.h>

using bertd::is_plain_command;
using bertd::worker_shell_line;

TEST_GROUP(WorkerCommand){};

TEST(WorkerCommand, a_program_and_its_arguments_is_execed_so_the_pid_stays_the_handlers) {
    STRCMP_EQUAL("exec python3 h.py", worker_shell_line("python3 h.py").c_str());
    CHECK(is_plain_command("/usr/bin/ruby -I lib 'my dir/ext.rb' \"a b\""));
    CHECK(is_plain_command("python3 $HOME/h.py --opt=1"));
    CHECK(is_plain_command("  python3 h.py  "));
}

TEST(WorkerCommand, a_leading_assignment_runs_through_the_shell_unchanged) {
    STRCMP_EQUAL("PYTHONPATH=/srv/lib python3 h.py",
                 worker_shell_line("PYTHONPATH=/srv/lib python3 h.py").c_str());
    CHECK(!is_plain_command("A=1 B=2 ruby x.rb"));
}

TEST(WorkerCommand, lists_pipes_and_shell_words_run_through_the_shell_unchanged) {
    STRCMP_EQUAL("cd /srv/app && ruby ext.rb", worker_shell_line("cd /srv/app && ruby ext.rb").c_str());
    CHECK(!is_plain_command("python3 h.py | cat"));
    CHECK(!is_plain_command("a; b"));
    CHECK(!is_plain_command("python3 h.py &"));
    CHECK(!is_plain_command("(python3 h.py)"));
    CHECK(!is_plain_command("python3 `which h.py`"));
    CHECK(!is_plain_command("exec python3 h.py"));  // already: never `exec exec`
    CHECK(!is_plain_command("if true; then python3 h.py; fi"));
    CHECK(!is_plain_command("python3 h.py\npython3 other.py"));
    CHECK(!is_plain_command(""));
}

TEST(WorkerCommand, operators_inside_quotes_are_arguments) {
    CHECK(is_plain_command("python3 h.py 'a|b;c&d' \"x && y\""));
    CHECK(is_plain_command("python3 h.py a\\;b"));
    CHECK(!is_plain_command("python3 'unclosed"));
}
