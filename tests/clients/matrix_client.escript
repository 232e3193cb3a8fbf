#!/usr/bin/env escript
%% matrix_client.escript: the cross-language matrix's Erlang client: runs every check of a plan against one
%% bertd over one persistent bertd_client connection and prints `ok N` or `fail N why` per check,
%% then `done`. Usage: escript matrix_client.escript EBIN HOST PORT TABLE PLAN. It never retries a check.
-mode(compile).

-define(MESSAGE, <<"matrix failure: ☃ ü"/utf8>>).

main([Ebin, Host, Port, TablePath, PlanPath]) ->
    true = code:add_patha(Ebin),
    {ok, TableBin} = file:read_file(TablePath),
    Table = maps:from_list([{Name, binary_to_term(V)} || {Name, V} <- binary_to_term(TableBin)]),
    {ok, PlanBin} = file:read_file(PlanPath),
    Plan = binary_to_term(PlanBin),
    {ok, Conn} = bertd_client:connect(Host, list_to_integer(Port), [{timeout, 60000}]),
    {Lines, _} = lists:mapfoldl(
                   fun({Check, Module, Name}, I) ->
                           Why = try run(Conn, Check, Module, Name, Table)
                                 catch Class:Reason -> io_lib:format("~p:~p", [Class, Reason])
                                 end,
                           Line = case Why of
                                      ok -> io_lib:format("ok ~b~n", [I]);
                                      _ -> io_lib:format("fail ~b ~s~n", [I, one_line(Why)])
                                  end,
                           {Line, I + 1}
                   end, 0, Plan),
    ok = bertd_client:close(Conn),
    ok = file:write_file("/dev/stdout", unicode:characters_to_binary([Lines, "done\n"])).

%% Exact equality: the external format tells 1 from 1.0 and -0.0 from 0.0 (=:= does not in OTP 25).
same(A, B) -> term_to_binary(A) =:= term_to_binary(B).

short(T) ->
    S = lists:flatten(io_lib:format("~0tp", [T])),
    case length(S) > 200 of true -> lists:sublist(S, 200) ++ "..."; false -> S end.

one_line(S) -> [case C of $\n -> $\s; _ -> C end || C <- lists:flatten(S)].

changed({ok, Got}, Want) ->
    case same(Got, Want) of true -> ok; false -> "changed: " ++ short(Got) end;
changed(Other, _) ->
    "unexpected: " ++ short(Other).

run(C, echo, M, Name, T) -> changed(bertd_client:call(C, M, echo, [maps:get(Name, T)]), maps:get(Name, T));
run(C, fetch, M, Name, T) -> changed(bertd_client:call(C, M, value, [Name]), maps:get(Name, T));
run(C, priority, M, Name, T) ->
    changed(bertd_client:call(C, M, echo, [maps:get(Name, T)], [{priority, low}]), maps:get(Name, T));
run(C, send, M, Name, T) ->
    case bertd_client:call(C, M, check, [Name, maps:get(Name, T)]) of
        {ok, ok} -> ok;
        Other -> "handler saw: " ++ short(Other)
    end;
run(C, cast, M, Name, T) ->
    case bertd_client:cast(C, M, echo, [maps:get(Name, T)]) of
        ok -> ok;
        Other -> "unexpected: " ++ short(Other)
    end;
run(C, user_error, M, _, _) ->
    expect(bertd_client:call(C, M, fail, [?MESSAGE]), user, 0, <<"MatrixError">>, ?MESSAGE);
run(C, no_function, M, _, _) ->
    Detail = iolist_to_binary(["No such function '", atom_to_binary(M), ":no_such_function'"]),
    expect(bertd_client:call(C, M, no_such_function, [1]), server, 2, any, Detail);
run(C, no_module, _, _, _) ->
    expect(bertd_client:call(C, matrix_none, f, []), server, 1, any, <<"No such module 'matrix_none'">>);
run(C, protocol, _, _, _) ->
    expect(bertd_client:request_raw(C, <<131, 255, 0>>), protocol, 2, any, any);
run(_, Check, _, _, _) ->
    io_lib:format("unknown check ~p", [Check]).

expect({error, {Type, Code, Class, Detail, Trace}}, Type, Code, WantClass, WantDetail)
  when is_list(Trace), is_binary(Class), is_binary(Detail) ->
    case (WantClass =:= any orelse WantClass =:= Class) andalso (WantDetail =:= any orelse WantDetail =:= Detail) of
        true -> ok;
        false -> "got " ++ short({Type, Code, Class, Detail})
    end;
expect(Other, _, _, _, _) ->
    "got " ++ short(Other).
