#!/usr/bin/env escript
%% rpc10_erlang_client.escript EBIN PORT SCENARIO [ARG]: bertd's Erlang client (bertd_client) doing
%% one BERT-RPC 1.0 scenario against module `lib` of a bertd on 127.0.0.1:PORT, or against a
%% scripted server (the fake_* scenarios); tests/integration/test_rpc10.py runs it. Prints the
%% scenario's outcome as the hex of its external term format and exits 0. It judges nothing itself.
-mode(compile).

-define(MIB, 1048576).

main([Ebin, PortText, Scenario | Rest]) ->
    true = code:add_patha(Ebin),
    Port = list_to_integer(PortText),
    Out = run(list_to_atom(Scenario), {"127.0.0.1", Port, [{timeout, 20000}]}, Rest),
    io:put_chars([binary:encode_hex(term_to_binary(Out)), $\n]).

crc(Blobs) -> lists:foldl(fun(B, C) -> erlang:crc32(C, B) end, 0, Blobs).

%% A sink that sends each chunk to this process, and what it was sent.
to_self() -> Self = self(), fun(Chunk) -> Self ! {chunk, Chunk} end.
got_chunks() -> receive {chunk, C} -> [C | got_chunks()] after 0 -> [] end.

run(stream_in, Addr, _) ->
    Blobs = [binary:copy(<<I>>, 65536) || I <- lists:seq(0, 127)],  % 8 MiB against max_frame 1 MiB
    {bertd_client:call(Addr, lib, sum_stream, [], [{stream_in, Blobs}]), [128, 8 * ?MIB, crc(Blobs)]};
run(stream_in_fun, {H, P, O}, _) ->
    Data = rand:bytes(3 * ?MIB + 17),
    Next = fun(<<>>) -> eof; (<<Piece:?MIB/binary, Rest/binary>>) -> {Piece, Rest}; (Last) -> {Last, <<>>} end,
    %% Three 1 MiB items and 17 bytes, each cut to 100000-byte chunks: 3 * 11 + 1.
    {bertd_client:call({H, P, [{chunk_size, 100000} | O]}, lib, sum_stream, [], [{stream_in, {Next, Data}}]),
     [34, byte_size(Data), erlang:crc32(Data)]};
run(stream_in_fun0, Addr, _) ->
    Left = counters:new(1, []),
    counters:put(Left, 1, 3),
    Next = fun() -> case counters:get(Left, 1) of 0 -> eof; _ -> counters:sub(Left, 1, 1), <<"abc">> end end,
    bertd_client:call(Addr, lib, sum_stream, [], [{stream_in, Next}]);
run(stream_out, Addr, _) ->
    Fold = fun(C, {N, Total, Max, Letters}) ->
                   {N + 1, Total + byte_size(C), max(Max, byte_size(C)), lists:usort([binary:first(C) | Letters])}
           end,
    bertd_client:call(Addr, lib, stream_out, [5, 300000], [{accept, [stream]}, {stream_out, {Fold, {0, 0, 0, []}}}]);
run(stream_out_each, Addr, _) ->
    {bertd_client:call(Addr, lib, stream_out, [3, 5], [{accept, stream}, {stream_out, to_self()}]), got_chunks()};
run(collected, Addr, _) ->
    bertd_client:call(Addr, lib, stream_out, [2, 3], [{accept, [stream]}]);
run(gathered, Addr, _) ->
    bertd_client:call(Addr, lib, stream_out, [3, 4]);
run(persistent, {H, P, O}, _) ->
    {ok, C} = bertd_client:connect(H, P, O),
    {ok, #{stream := A}} = bertd_client:call(C, lib, stream_out, [2, 10], [{accept, [stream]}]),
    {ok, [_, B | _]} = bertd_client:call(C, lib, sum_stream, [], [{stream_in, [<<"12345">>]}]),
    Sum = bertd_client:call(C, lib, add, [2, 2]),
    bertd_client:close(C),
    [A, B, Sum];
run(echo, Addr, _) ->
    Blobs = [rand:bytes(50000) || _ <- lists:seq(1, 20)],
    {ok, #{value := V, stream := S}} =
        bertd_client:call(Addr, lib, echo_stream, [], [{stream_in, Blobs}, {accept, [stream]}]),
    {V, S =:= iolist_to_binary(Blobs)};
run(cache, Addr, _) ->
    {ok, Answer} = bertd_client:call(Addr, lib, cached, [7], [{accept, [cache]}]),
    {Answer, bertd_client:call(Addr, lib, cached, [8])};
run(validation, {H, P, O}, _) ->
    {ok, C} = bertd_client:connect(H, P, O),
    {ok, First = #{cache := #{validation := Token}}} = bertd_client:call(C, lib, validated, [1], [{accept, [cache]}]),
    Again = bertd_client:call(C, lib, validated, [1], [{validation, Token}]),
    Stale = bertd_client:call(C, lib, validated, [2], [{validation, <<"v0">>}]),
    Next = bertd_client:call(C, lib, add, [1, 1]),
    bertd_client:close(C),
    [First, Again, Stale, Next];
run(callback, Addr, [ServicePort]) ->
    bertd_client:cast(Addr, lib, add, [86000, 193],
                      [{callback, {"127.0.0.1:" ++ ServicePort, cron, updated_stats, [42]}}]);
run(not_allowed, Addr, _) ->
    bertd_client:cast(Addr, lib, add, [1, 1], [{callback, {<<"192.0.2.1:4815">>, m, f, []}}]);
run(bad_options, Addr, _) ->
    [bertd_client:call(Addr, lib, add, [1, 1], [O]) || O <- [{accept, [everything]}, {validation, 7},
                                                             {callback, {"127.0.0.1:1", m, f, []}},
                                                             {stream_in, 42}, {stream_out, 42}]]
        ++ [bertd_client:cast(Addr, lib, add, [1, 1], [{callback, {"nowhere", m, f, []}}]),
            bertd_client:call(Addr, lib, sum_stream, [], [{stream_in, [<<"ok">>, 42]}]),
            bertd_client:call(Addr, lib, add, [1, 1])];
run(max_stream, Addr, _) ->
    Block = binary:copy(<<"s">>, ?MIB),
    Endless = fun() -> Block end,
    {bertd_client:call(Addr, lib, sum_stream, [], [{stream_in, Endless}]), bertd_client:call(Addr, lib, add, [1, 1])};
run(stop_reading, {H, P, O}, _) ->
    {ok, C} = bertd_client:connect(H, P, [{max_stream, ?MIB} | O]),
    Stop = fun(_Chunk, _) -> throw(enough) end,
    Thrown = bertd_client:call(C, lib, stream_out, [64, ?MIB], [{accept, [stream]}, {stream_out, {Stop, 0}}]),
    Capped = bertd_client:call(C, lib, stream_out, [64, ?MIB], [{accept, [stream]}]),
    Then = bertd_client:call(C, lib, add, [5, 5]),
    bertd_client:close(C),
    [Thrown, Capped, Then];
run(priority, Addr, _) ->
    [bertd_client:call(Addr, lib, add, [1, 2], [{priority, high}, {accept, [cache]}]),
     bertd_client:call(Addr, lib, add, [2, 2], [{priority, low}, {stream_in, [<<"x">>]}])];
%% A client that knows none of BERT-RPC 1.0: one frame out, exactly one frame back, nothing after.
run(old_client, {H, P, _}, _) ->
    {ok, S} = gen_tcp:connect(H, P, [binary, {packet, 4}, {active, false}]),
    Ask = fun(Req) ->
                  ok = gen_tcp:send(S, term_to_binary(Req)),
                  {ok, A} = gen_tcp:recv(S, 0, 20000),
                  {binary_to_term(A), gen_tcp:recv(S, 0, 300)}
          end,
    Out = [Ask({call, lib, stream_out, [3, 4]}), Ask({call, lib, cached, [9]}), Ask({call, lib, validated, [3]}),
           Ask({call, lib, add, [1, 2]})],
    gen_tcp:close(S),
    Out;
run(fake_cache, Addr, _) ->
    bertd_client:call(Addr, m, f, [], [{accept, [cache]}]);
run(fake_stream, {H, P, O}, Max) ->
    Opts = [{max_chunk, list_to_integer(M)} || M <- Max] ++ O,
    {bertd_client:call({H, P, Opts}, m, f, [], [{accept, [stream]}, {stream_out, to_self()}]), got_chunks()};
run(fake_plain, Addr, _) ->
    bertd_client:call(Addr, m, f, []).
