%% natinfo: a native module that attaches BERT-RPC 1.0 infos to its answers, as bertd(8)
%% says a native function does: {bert_rpc_info, [{Command, Options}], Result}.
-module(natinfo).
-export([cached/1]).

cached(X) -> {bert_rpc_info, [{cache, [{access, public}, {expiration, 60}]}], X}.
