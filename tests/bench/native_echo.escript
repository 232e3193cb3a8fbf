#!/usr/bin/env escript
%% native_echo.escript: make bench's native baseline (issue 15): the least a native BERT-RPC call
%% needs, in Erlang itself. A gen_tcp {packet, 4} server on 127.0.0.1 that answers each
%% {call, M, F, A} with {reply, apply(M, F, A)} (binary_to_term, apply, term_to_binary: no
%% routing, no limits, no link); anything else gets a protocol error. It listens on loopback only.
%%   escript native_echo.escript Port Ebin
-mode(compile).

-define(ACCEPTORS, 8).

main([Port0, Ebin]) ->
    true = code:add_patha(Ebin),
    {module, _} = code:ensure_loaded(bertd_echo),
    Port = list_to_integer(Port0),
    {ok, L} = gen_tcp:listen(Port, [binary, {packet, 4}, {active, false}, {ip, {127, 0, 0, 1}},
                                    {reuseaddr, true}, {nodelay, true}, {backlog, 1024}]),
    [spawn(fun() -> accept(L) end) || _ <- lists:seq(1, ?ACCEPTORS)],
    receive stop -> ok end.

%% Each acceptor serves the connection it accepted (it owns the socket: no hand-over) and leaves
%% a new acceptor in its place first.
accept(L) ->
    case gen_tcp:accept(L) of
        {ok, S} ->
            spawn(fun() -> accept(L) end),
            serve(S);
        {error, emfile} ->
            timer:sleep(10),
            accept(L);
        {error, Reason} ->
            exit(Reason)
    end.

serve(S) ->
    case gen_tcp:recv(S, 0) of
        {ok, Bin} ->
            ok = gen_tcp:send(S, term_to_binary(answer(Bin))),
            serve(S);
        {error, _} ->
            gen_tcp:close(S)
    end.

answer(Bin) ->
    try binary_to_term(Bin, [safe]) of
        {call, M, F, A} when is_atom(M), is_atom(F), is_list(A) ->
            try {reply, apply(M, F, A)}
            catch Class:Reason -> {error, {user, 0, Class, Reason, []}}
            end;
        _ -> {error, {protocol, 0, <<"ProtocolError">>, <<"not a call">>, []}}
    catch error:badarg -> {error, {protocol, 0, <<"ProtocolError">>, <<"not a term">>, []}}
    end.
