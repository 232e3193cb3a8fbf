// main.cc: the CppUTest runner for bertd's unit tests.
// CppUTest's own leak detector is off: it counts third-party caches (yaml-cpp,
// ei) as leaks. `make test SANITIZE=1` runs these tests under LeakSanitizer instead.
#include <CppUTest/CommandLineTestRunner.h>
#include <CppUTest/MemoryLeakWarningPlugin.h>

int main(int argc, char** argv) {
    MemoryLeakWarningPlugin::turnOffNewDeleteOverloads();
    return CommandLineTestRunner::RunAllTests(argc, argv);
}
