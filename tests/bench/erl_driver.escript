#!/usr/bin/env escript
%% erl_driver.escript: the Erlang side of make bench's Erlang rows (tests/bench/erlbench.py). As a node
%% of its own it measures, for Seconds each, alternating bertd and the Erlang baseline Rounds times:
%%   msgs_bertd  messages to bertd's registered Python process bench_sink
%%   msgs_local  messages to a local Erlang process (erlang:send in this VM)
%%   rpc_bertd   a loop of rpc:call(Bertd, echo, echo, [<<"hello">>]) (bertd's external C++ echo)
%%   rpc_erlang  a loop of rpc:call(Other, bertd_echo, echo, [<<"hello">>]) (another Erlang VM)
%%   rpc8_*      the same rpc loops from 8 processes at once
%% and prints one line per round: RESULT Key Count Microseconds.
%% Messages go in windows of 500 followed by a {sync, Self} the receiver answers, so what is counted
%% has been run, and bertd's per-name queue (erlang.max_queue) is never the limit.
%%   escript erl_driver.escript SelfName Cookie BertdNode OtherNode Seconds Rounds
-mode(compile).

-define(WINDOW, 500).

main([Self, Cookie, Bertd0, Other0, Secs, Rounds]) ->
    {ok, _} = net_kernel:start([list_to_atom(Self), longnames]),
    erlang:set_cookie(node(), list_to_atom(Cookie)),
    Bertd = list_to_atom(Bertd0),
    Other = list_to_atom(Other0),
    Us = round(list_to_float(Secs) * 1000000),
    wait_for(fun() -> net_adm:ping(Bertd) =:= pong andalso net_adm:ping(Other) =:= pong end, 200),
    wait_for(fun() -> sync({bench_sink, Bertd}, 2000) =/= timeout end, 100),
    Local = spawn_link(fun() -> sink(0) end),
    Cases = [{msgs, fun() -> msgs({bench_sink, Bertd}, Us) end, fun() -> msgs(Local, Us) end},
             {rpc, fun() -> rpc_loop(Bertd, echo, Us) end, fun() -> rpc_loop(Other, bertd_echo, Us) end},
             {rpc8, fun() -> par(8, fun() -> rpc_loop(Bertd, echo, Us) end) end,
              fun() -> par(8, fun() -> rpc_loop(Other, bertd_echo, Us) end) end}],
    [begin
         {Count, Took} = if R rem 2 =:= 0 -> B(); true -> E() end,
         {Count2, Took2} = if R rem 2 =:= 0 -> E(); true -> B() end,
         {KB, KE} = {key(Name, bertd), key(Name, erlang(Name))},
         {First, Second} = if R rem 2 =:= 0 -> {KB, KE}; true -> {KE, KB} end,
         io:format("RESULT ~s ~b ~b~nRESULT ~s ~b ~b~n", [First, Count, Took, Second, Count2, Took2])
     end || {Name, B, E} <- Cases, R <- lists:seq(1, list_to_integer(Rounds))],
    halt(0).

erlang(msgs) -> local;
erlang(_) -> erlang.

key(Name, Side) -> atom_to_list(Name) ++ "_" ++ atom_to_list(Side).

wait_for(_, 0) -> io:format(standard_error, "bertd or the other node did not come up~n", []), halt(1);
wait_for(F, N) -> case F() of true -> ok; _ -> timer:sleep(100), wait_for(F, N - 1) end.

now_us() -> erlang:monotonic_time(microsecond).

sync(Dest, Timeout) ->
    Dest ! {sync, self()},
    receive {synced, N} -> N after Timeout -> timeout end.

sink(N) ->
    receive
        {sync, P} -> P ! {synced, N}, sink(N);
        _ -> sink(N + 1)
    end.

msgs(Dest, Us) ->
    T0 = now_us(),
    msgs(Dest, T0 + Us, T0, 0).
msgs(Dest, Until, T0, Sent) ->
    [Dest ! {m, I} || I <- lists:seq(1, ?WINDOW)],
    timeout =/= sync(Dest, 30000) orelse error(no_sync),
    Now = now_us(),
    if Now >= Until -> {Sent + ?WINDOW, Now - T0};
       true -> msgs(Dest, Until, T0, Sent + ?WINDOW)
    end.

rpc_loop(Node, Mod, Us) ->
    T0 = now_us(),
    rpc_loop(Node, Mod, T0 + Us, T0, 0).
rpc_loop(Node, Mod, Until, T0, N) ->
    <<"hello">> = rpc:call(Node, Mod, echo, [<<"hello">>]),
    case now_us() of
        Now when Now >= Until -> {N + 1, Now - T0};
        _ -> rpc_loop(Node, Mod, Until, T0, N + 1)
    end.

par(K, F) ->
    Self = self(),
    T0 = now_us(),
    Pids = [spawn_link(fun() -> Self ! {done, self(), F()} end) || _ <- lists:seq(1, K)],
    Counts = [receive {done, P, {C, _}} -> C end || P <- Pids],
    {lists:sum(Counts), now_us() - T0}.
