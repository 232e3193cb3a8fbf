// main.cc: bertd's entry point.
#include <cstdio>
int main() {
    std::fprintf(stderr, "bertd: the server is not built yet\n");
    return 1;
}
