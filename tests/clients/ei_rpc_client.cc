// ei_rpc_client.cc: an erl_interface C-node client, as C and C++ programs call Erlang
// nodes: it connects to NODE and sends what ei_rpc() sends ({Self, {call, M, F, Args,
// user}} to rex), then prints the answer message ({rex, Result}) in Erlang syntax.
// Used by tests/integration/test_erlang_node.py; it never waits past its timeout.
//   ei_rpc_client COOKIE NODE MODULE FUNCTION [INT...]
#include <ei.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

int main(int argc, char** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: ei_rpc_client COOKIE NODE MODULE FUNCTION [INT...]\n");
        return 2;
    }
    ei_init();
    ei_cnode ec;
    std::string alive = "eirpc" + std::to_string(getpid()) + "x" + std::to_string(time(nullptr) % 100000);
    std::string self = alive + "@127.0.0.1";
    in_addr addr{};
    addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ei_connect_xinit(&ec, "127.0.0.1", alive.c_str(), self.c_str(), &addr, argv[1], 0) < 0) {
        fprintf(stderr, "ei_connect_xinit failed\n");
        return 1;
    }
    int fd = ei_connect_tmo(&ec, argv[2], 5000);
    if (fd < 0) {
        fprintf(stderr, "cannot connect to %s (%d)\n", argv[2], fd);
        return 1;
    }
    ei_x_buff args;
    ei_x_new(&args);
    ei_x_encode_list_header(&args, argc - 5);  // with no elements, that is [] already
    for (int i = 5; i < argc; ++i) ei_x_encode_long(&args, atol(argv[i]));
    if (argc > 5) ei_x_encode_empty_list(&args);
    if (ei_rpc_to(&ec, fd, argv[3], argv[4], args.buff, args.index) < 0) {
        fprintf(stderr, "ei_rpc_to failed\n");
        return 1;
    }
    for (;;) {
        erlang_msg msg;
        ei_x_buff reply;
        ei_x_new(&reply);
        int got = ei_rpc_from(&ec, fd, 5000, &msg, &reply);
        if (got == ERL_TICK) {
            ei_x_free(&reply);
            continue;
        }
        if (got == ERL_ERROR || got < 0) {
            fprintf(stderr, "no answer (%s)\n", erl_errno == ETIMEDOUT ? "timeout" : strerror(erl_errno));
            return 1;
        }
        int index = 0, version;
        char* text = nullptr;
        ei_decode_version(reply.buff, &index, &version);
        if (ei_s_print_term(&text, reply.buff, &index) < 0) {
            fprintf(stderr, "undecodable answer\n");
            return 1;
        }
        printf("%s\n", text);
        free(text);
        return 0;
    }
}
