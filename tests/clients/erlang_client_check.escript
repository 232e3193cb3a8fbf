#!/usr/bin/env escript
%% erlang_client_check.escript: drives bertd_client through one scenario against a scripted server (see
%% modules/erlang/tests/test_erlang_client.py) and prints one line per request, the result as ~w
%% writes it. Usage: escript erlang_client_check.escript EBIN PORT SCENARIO. It judges nothing itself.
-mode(compile).

main([Ebin, PortText, Scenario]) ->
    true = code:add_patha(Ebin),
    Port = list_to_integer(PortText),
    run(list_to_atom(Scenario), {"127.0.0.1", Port}).

say(Term) -> io:put_chars([io_lib:print(Term, 1, 1 bsl 30, -1), $\n]).

run(basic, {Host, Port} = Addr) ->
    say(bertd_client:call(Addr, m, add, [1, 2])),
    say(bertd_client:cast(Addr, m, work, [1])),
    say(bertd_client:request_raw(Addr, <<131, 104, 1, 100, 0, 1, $x>>)),
    say(bertd_client:call({Host, Port, [{timeout, 5000}]}, m, add, [3, 4]));
run(errors, {Host, Port}) ->
    {ok, C} = bertd_client:connect(Host, Port),
    [say(bertd_client:call(C, m, F, [])) || F <- [protocol, server, user, proxy, other, old, badshape]],
    ok = bertd_client:close(C);
run(priority, {Host, Port} = Addr) ->
    {ok, C} = bertd_client:connect(Host, Port, [{priority, low}]),
    say(bertd_client:call(C, m, a, [])),
    say(bertd_client:call(C, m, b, [], [{priority, high}, {info, cache, [validation, <<"tok">>]}])),
    ok = bertd_client:close(C),
    say(bertd_client:call(Addr, m, c, []));
run(timeout, {Host, Port}) ->
    {ok, C} = bertd_client:connect(Host, Port, [{timeout, 300}, {connect_timeout, 10000}]),
    T0 = erlang:monotonic_time(millisecond),
    say(bertd_client:call(C, m, slow, [])),
    say({elapsed, erlang:monotonic_time(millisecond) - T0});
run(late, {Host, Port}) ->
    {ok, C} = bertd_client:connect(Host, Port, [{timeout, 300}, {connect_timeout, 10000}]),
    say(bertd_client:call(C, m, slow, [])),
    say(bertd_client:call(C, m, next, [], [{timeout, 10000}]));  % only the first one is meant to time out
run(persistent, {Host, Port}) ->
    {ok, C} = bertd_client:connect(Host, Port),
    say(bertd_client:call(C, m, a, [])),
    say(bertd_client:call(C, m, b, [])),
    timer:sleep(200),  % the server has closed the connection meanwhile
    say(bertd_client:call(C, m, c, [])),
    say(bertd_client:call(C, m, d, [])),
    ok = bertd_client:close(C),
    say(bertd_client:call(C, m, e, []));
run(broken, {Host, Port}) ->
    {ok, C} = bertd_client:connect(Host, Port),
    [say(bertd_client:call(C, m, F, [])) || F <- [garbage, shape, noreply, cut]],
    say(bertd_client:cast(C, m, reply_to_cast, [])),
    ok = bertd_client:close(C);
run(refused, {Host, Port} = Addr) ->
    say(bertd_client:connect(Host, Port)),
    say(bertd_client:call(Addr, m, a, [])),
    say(bertd_client:connect(Host, Port, [{bogus, 1}])),
    say(bertd_client:call(Addr, "m", a, []));
run(floats, {Host, Port} = Addr) ->
    say(bertd_client:call(Addr, m, echo, [2.5])),
    say(bertd_client:call({Host, Port, [{float_format, ernie}]}, m, echo, [2.5])),
    {ok, C} = bertd_client:connect(Host, Port, [{float_format, ernie}, {priority, low}]),
    say(bertd_client:call(C, m, echo, [[0.1 + 0.2]], [{info, cache, [validation, <<"t">>]}])),
    ok = bertd_client:close(C),
    say(bertd_client:connect(Host, Port, [{float_format, old}]));
run(terms, {Host, Port} = Addr) ->
    %% Every tag OTP 25 writes beyond the plain ones, sent and echoed back.
    Terms = [fun lists:map/2, fun(X) -> {X, Addr} end, <<5:3>>, <<1, 2:7>>, self(), make_ref(),
             hd(erlang:ports()), binary_to_term(<<131, 120, 100, 0, 3, "a@b", 1:64, 2:32>>)],
    say(bertd_client:call(Addr, m, echo, [Terms]) =:= {ok, Terms}),
    say(bertd_client:call({Host, Port, [safe]}, m, echo, [Terms]) =:= {ok, Terms});
run(owner, {Host, Port}) ->
    %% The connection process ends with the process that opened it.
    Self = self(),
    Owner = spawn(fun() -> {ok, C} = bertd_client:connect(Host, Port), Self ! {conn, C} end),
    Conn = receive {conn, C} -> C end,
    Ref = erlang:monitor(process, Conn),
    receive
        {'DOWN', Ref, process, Conn, _} -> say({owner_gone, is_process_alive(Owner)})
    after 2000 -> say(still_alive)
    end.
