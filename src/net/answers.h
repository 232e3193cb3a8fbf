// answers.h: the BERT-RPC answers bertd writes itself (errors, noreply), as whole
// BERP frames ready to send. No I/O.
#pragma once

#include <string>
#include <string_view>

namespace bertd {

enum class ErrorType { Protocol = 0, Server = 1, User = 2, Proxy = 3 };
std::string_view error_type_name(ErrorType t);

// {error, {Type, Code, Class, Detail, []}} as a frame. Class is <<"ProtocolError">>
// or <<"ServerError">> for the errors bertd raises itself.
std::string error_frame(ErrorType type, int code, std::string_view detail);
const std::string& noreply_frame();

// Classifies an answer payload from a worker: -1 for {reply, _} / {noreply},
// else the ErrorType of an {error, {Type, ...}} (Server when it cannot tell).
int answer_error_type(std::string_view payload);

}  // namespace bertd
