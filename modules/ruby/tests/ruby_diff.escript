#!/usr/bin/env escript
%% ruby_diff.escript: the Erlang half of test_ruby.py's differential test of BERTD::Codec.
%%   escript ruby_diff.escript terms OUT      writes Erlang-made terms for Ruby to decode and re-encode:
%%                                            records <<Len:32, Plain, Len:32, MinorVersion0>>
%%   escript ruby_diff.escript check IN OUT   judges terms Ruby encoded: IN holds records <<Format,
%%                                            Len:32, Bert, Len:32, ErlangExpression>> (Format 0 for
%%                                            FLOAT_EXT floats, 1 for NEW_FLOAT), OUT gets one line each
%% A check line is `ok`, `different Term Expected`, `bytes Erlang's` (same term, other bytes),
%% `undecodable` or `noexpr Text`. It never writes anywhere but OUT.
-mode(compile).

main(["terms", Out]) ->
    ok = file:write_file(Out, [record(T) || T <- terms()]);
main(["check", In, Out]) ->
    {ok, Data} = file:read_file(In),
    ok = file:write_file(Out, check(Data, []));
main(_) ->
    io:format(standard_error, "usage: ruby_diff.escript terms OUT | check IN OUT~n", []),
    halt(1).

record(T) ->
    Plain = term_to_binary(T),
    Ernie = term_to_binary(T, [{minor_version, 0}]),
    <<(byte_size(Plain)):32, Plain/binary, (byte_size(Ernie)):32, Ernie/binary>>.

%% Terms whose Ruby values encode back to Erlang's own bytes: every tag ruby-bert lacks, floats in
%% both forms, and the plain terms around them. (Byte lists, maps and improper lists have no such
%% Ruby value: see the README.)
terms() ->
    [self(), make_ref(), hd(erlang:ports()), fun lists:map/2, fun erlang:'+'/2,
     fun() -> ok end, adder(7), adder({<<1:3>>, 2.5, [self()]}), [adder(1), fun lists:map/2],
     <<5:3>>, <<1, 2, 255:7>>, {<<>>, <<0:1>>}, <<"whole bytes">>,
     foreign(88, <<0, 0, 0, 7, 0, 0, 0, 3, 16#ff, 16#ee, 16#dd, 16#cc>>),
     foreign(89, <<0, 0, 0, 9, 0, 0, 0, 5>>),
     foreign(120, <<0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 5>>),
     binary_to_term(<<131, 90, 0, 3, 100, 0, 10, "other@host", 16#80, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2,
                      0, 0, 0, 3>>),
     {ok, [self(), {make_ref(), <<1:1>>}], fun lists:map/2, 'with space', ''},
     [2.5, -0.0, 0.0, 1.0e-300, 0.1 + 0.2, 123456789.123456789, {1.5}, 5.0e-324, 1.0e300,
      -1.7976931348623157e308, 2.2250738585072014e-308, 1.0e22, 1.0e-7]
     | random_floats(200)].

%% A fun closing over V (made at run time, so the compiler cannot fold it away).
adder(V) ->
    fun(X) -> {X, V} end.

%% A pid (88) or port (89, 120) of the node 'other@host'.
foreign(Tag, Fields) ->
    binary_to_term(<<131, Tag, 100, 0, 10, "other@host", Fields/binary>>).

random_floats(N) ->
    rand:seed(exsss, {3, 14, 15}),
    [F || F <- [random_float() || _ <- lists:seq(1, N)], F =/= nan].

random_float() ->
    <<Bits:64>> = rand:bytes(8),
    case <<Bits:64>> of
        <<F:64/float>> -> F;
        _ -> nan  % infinities and NaNs do not match a float segment
    end.

check(<<>>, Acc) ->
    lists:reverse(Acc);
check(<<Format, L1:32, Bin:L1/binary, L2:32, Text:L2/binary, Rest/binary>>, Acc) ->
    Line = case {decode(Bin), eval(Text)} of
               {error, _} -> "undecodable";
               {_, error} -> ["noexpr ", Text];
               {{ok, T}, {ok, T}} ->
                   Expected = term_to_binary(T, [{minor_version, Format}]),
                   case Expected of
                       Bin -> "ok";
                       _ -> io_lib:format("bytes ~w", [Expected])
                   end;
               {{ok, T}, {ok, E}} -> io_lib:format("different ~w ~w", [T, E])
           end,
    check(Rest, [[Line, $\n] | Acc]).

decode(Bin) ->
    try {ok, binary_to_term(Bin)} catch _:_ -> error end.

eval(Text) ->
    try
        {ok, Tokens, _} = erl_scan:string(unicode:characters_to_list(Text) ++ "."),
        {ok, Exprs} = erl_parse:parse_exprs(Tokens),
        {value, T, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
        {ok, T}
    catch
        _:_ -> error
    end.
