%% natinfo: a native module that attaches BERT-RPC 1.0 infos to its answers, as bertd(8)
%% says a native function does: {bert_rpc_info, [{Command, Options}], Result}.
-module(natinfo).
-export([cached/1, many/1, loud/1]).

cached(X) -> {bert_rpc_info, [{cache, [{access, public}, {expiration, 60}]}], X}.
%% A Result of N elements, which bertd relays without decoding it.
many(N) -> {bert_rpc_info, [{cache, [{access, private}]}], lists:duplicate(N, [])}.
%% Infos of about 14 x N bytes, over what an info may be past N = 4700.
loud(N) -> {bert_rpc_info, [{cache, lists:duplicate(N, {access, public})}], ok}.
