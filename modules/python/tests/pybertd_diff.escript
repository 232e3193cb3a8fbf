#!/usr/bin/env escript
%% pybertd_diff.escript: the Erlang half of test_pybertd_erl.py. It decodes terms Python encoded and
%% checks them against their Erlang text, and writes term_to_binary bytes of Erlang-made terms for Python
%% to decode: plain, compressed, and with {minor_version, 0} (floats as FLOAT_EXT, as Ernie-era software
%% reads them). It must never write anywhere but the two output files it is given.
-mode(compile).

main([PyCases, PyResults, ErlCases]) ->
    {ok, In} = file:read_file(PyCases),
    ok = file:write_file(PyResults, check(In, [])),
    ok = file:write_file(ErlCases, [record(T) || T <- fixed() ++ random_terms(250)]),
    halt(0).

%% Each Python case is <<Len:32, Bert/binary, Len:32, ErlangText/binary>>. Each result is
%% <<Status, Len:32, term_to_binary(Decoded), Len:32, term_to_binary(Expected)>> where Status is
%% 1 equal, 0 different, 2 binary_to_term failed, 3 the text did not parse.
check(<<>>, Acc) ->
    lists:reverse(Acc);
check(<<L1:32, Bin:L1/binary, L2:32, Text:L2/binary, Rest/binary>>, Acc) ->
    Out = try binary_to_term(Bin) of
              T ->
                  B = term_to_binary(T),
                  case parse(Text) of
                      {ok, E} ->
                          Status = case E =:= T of true -> 1; false -> 0 end,
                          EB = term_to_binary(E),
                          <<Status, (byte_size(B)):32, B/binary, (byte_size(EB)):32, EB/binary>>;
                      error ->
                          <<3, (byte_size(B)):32, B/binary, 0:32>>
                  end
          catch
              _:_ -> <<2, 0:32, 0:32>>
          end,
    check(Rest, [Out | Acc]).

%% A literal term, or else an expression such as `fun lists:map/2` (which parse_term does not read).
parse(Text) ->
    case erl_scan:string(unicode:characters_to_list(Text) ++ ".") of
        {ok, Tokens, _} ->
            case erl_parse:parse_term(Tokens) of
                {ok, T} -> {ok, T};
                _ -> eval(Tokens)
            end;
        _ ->
            error
    end.

eval(Tokens) ->
    try
        {ok, Exprs} = erl_parse:parse_exprs(Tokens),
        {value, T, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
        {ok, T}
    catch
        _:_ -> error
    end.

record(T) ->
    Plain = term_to_binary(T),
    Compressed = term_to_binary(T, [compressed]),
    Ernie = term_to_binary(T, [{minor_version, 0}]),
    <<(byte_size(Plain)):32, Plain/binary, (byte_size(Compressed)):32, Compressed/binary,
      (byte_size(Ernie)):32, Ernie/binary>>.

fixed() ->
    [0, 255, 256, -1, 2147483647, -2147483648, 2147483648, -2147483649,
     1 bsl 64, -(1 bsl 64), 1 bsl 2039, 1 bsl 2040, -(1 bsl 2048), 1 bsl 5000,
     1.5, -0.0, 0.0, 1.0e300, -2.5e-300, 5.0e-324, 3.141592653589793,
     abc, '', 'with space', 'quote\'s', list_to_atom([233, 116, 233]), list_to_atom([20320, 22909]),
     list_to_atom(lists:duplicate(100, 8364)), list_to_atom(lists:duplicate(255, $z)),
     list_to_atom([16#1F600]),
     {}, {a, {b}}, list_to_tuple(lists:seq(1, 300)),
     [], "string", [1000, 2000], [a | b], [1, 2 | 3], [[] | []], lists:duplicate(300, 0),
     lists:duplicate(70000, 1), lists:seq(1, 1000),
     <<>>, <<1, 2, 3>>, <<1:3>>, <<1, 2, 3:5>>, binary:copy(<<"x">>, 100000),
     #{}, #{a => 1, 1 => a, 2.5 => b, <<"k">> => [x], {t, 1} => #{}},
     #{100 => a, 1.0 => b, z => c, 0 => d, -5 => e},
     self(), make_ref(), hd(erlang:ports()), fun lists:map/2, fun erlang:'+'/2,
     %% Every tag OTP 25 writes beyond the plain ones: funs (none or some values closed over, a float
     %% among them), bit strings, and pids, ports and references of another node, with 32-bit
     %% creations and a port id past 32 bits (V4_PORT_EXT).
     fun() -> ok end, adder(7), adder({<<1:3>>, 2.5, [self()]}), [adder(1), fun lists:map/2],
     #{adder(1) => local, fun lists:map/2 => external, fun() -> ok end => none},
     <<5:3>>, <<1, 2, 255:7>>, {<<>>, <<0:1>>},
     foreign(88, <<0, 0, 0, 7, 0, 0, 0, 3, 16#ff, 16#ee, 16#dd, 16#cc>>),
     foreign(89, <<0, 0, 0, 9, 0, 0, 0, 5>>),
     foreign(120, <<0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 5>>),
     foreign(90, <<0, 3>>, <<16#80, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3>>),
     [2.5, -0.0, 1.0e-300, 0.1 + 0.2, 123456789.123456789, {1.5}, #{1.5 => 2.5}],
     {bert, nil}, {bert, true}, {bert, false}, {bert, dict, []}, {bert, dict, [{a, 1}, {<<"b">>, [2]}]},
     {bert, time, 1266, 666145, 259750}, {bert, regex, <<"^a+">>, [caseless]},
     {bert, regex, <<"x">>, [caseless, extended, multiline, dotall]},
     {call, calc, add, [1, 2]}, {reply, {bert, nil}},
     {error, {user, 0, <<"RuntimeError">>, <<"boom">>, [<<"calc.rb:5:in `fail'">>]}}].

%% A fun closing over V (made at run time, so the compiler cannot fold it away).
adder(V) ->
    fun(X) -> {X, V} end.

%% A pid (88), port (89, 120) or reference (90) of the node 'other@host': Tag, then the node name,
%% then Fields (a reference has its word count before the node).
foreign(Tag, Fields) ->
    binary_to_term(<<131, Tag, 100, 0, 10, "other@host", Fields/binary>>).

foreign(90, Count, Fields) ->
    binary_to_term(<<131, 90, Count/binary, 100, 0, 10, "other@host", Fields/binary>>).

random_terms(N) ->
    rand:seed(exsss, {17, 42, 99}),
    [gen(3) || _ <- lists:seq(1, N)].

gen(0) ->
    leaf();
gen(D) ->
    case rand:uniform(12) of
        1 -> list_to_tuple([gen(D - 1) || _ <- count(6)]);
        2 -> [gen(D - 1) || _ <- count(6)];
        3 -> maps:from_list([{key(), gen(D - 1)} || _ <- count(7)]);
        4 -> lists:foldr(fun(X, Acc) -> [X | Acc] end, improper_tail(), [gen(D - 1) || _ <- count(3) ++ [x]]);
        5 -> [rand:uniform(256) - 1 || _ <- count(30)];
        %% Unique keys: a Python dict would merge duplicates and change the bytes.
        6 -> {bert, dict, maps:to_list(maps:from_list([{key(), gen(D - 1)} || _ <- count(4)]))};
        _ -> leaf()
    end.

count(Max) ->
    lists:seq(1, rand:uniform(Max + 1) - 1).

improper_tail() ->
    case rand:uniform(3) of
        1 -> rand:uniform(100);
        2 -> atom();
        3 -> rand:bytes(3)
    end.

leaf() ->
    case rand:uniform(10) of
        1 -> rand:uniform(256) - 1;
        2 -> rand:uniform(1 bsl 32) - (1 bsl 31) - 1;
        3 -> sign() * (rand:uniform(1 bsl 64) bsl rand:uniform(2100));
        4 -> sign() * rand:uniform() * math:pow(10, rand:uniform(600) - 300);
        5 -> atom();
        6 -> rand:bytes(rand:uniform(40) - 1);
        7 -> unicode:characters_to_binary([char() || _ <- count(10)]);
        8 -> [];
        9 -> -rand:uniform(1000);
        10 -> {bert, time, rand:uniform(2000), rand:uniform(1000000) - 1, rand:uniform(1000000) - 1}
    end.

key() ->
    case rand:uniform(4) of
        1 -> rand:uniform(1000);
        2 -> atom();
        3 -> rand:bytes(rand:uniform(5));
        4 -> {atom(), rand:uniform(10)}
    end.

sign() ->
    case rand:uniform(2) of 1 -> 1; 2 -> -1 end.

atom() ->
    Len = case rand:uniform(10) of 10 -> rand:uniform(255); _ -> rand:uniform(12) - 1 end,
    list_to_atom([char() || _ <- lists:seq(1, Len)]).

char() ->
    case rand:uniform(4) of
        1 -> $a + rand:uniform(26) - 1;
        2 -> 160 + rand:uniform(96) - 1;
        3 -> 16#4E00 + rand:uniform(512) - 1;
        4 -> 16#1F600 + rand:uniform(64) - 1
    end.
