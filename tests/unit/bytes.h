// bytes.h: the unit tests' way to write a term's bytes out by hand, B({131, 106}).
#pragma once

#include <initializer_list>
#include <string>

inline std::string B(std::initializer_list<int> bytes) {
    std::string s;
    for (int b : bytes) s.push_back(static_cast<char>(b));
    return s;
}
