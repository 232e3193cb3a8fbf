#!/usr/bin/env escript
%% matrix_table.escript: writes the cross-language matrix's value table, made by Erlang itself (the
%% reference encoder and printer), to OUTDIR: table.bert, a list of {Name, term_to_binary(Value)},
%% and texts.bert, a list of {Name, Text} with Value as io_lib:print writes it (UTF-8), for bertc.
%% Usage: escript matrix_table.escript OUTDIR. It never writes anywhere else.
-mode(compile).

main([OutDir]) ->
    Table = [{atom_to_binary(Name), Value} || {Name, Value} <- values()],
    ok = file:write_file(filename:join(OutDir, "table.bert"),
                         term_to_binary([{Name, term_to_binary(V)} || {Name, V} <- Table])),
    %% ~p of an 8 MiB binary takes Erlang many seconds; the test writes that one text itself.
    Texts = [{Name, unicode:characters_to_binary(io_lib:print(V, 1, 1 bsl 40, -1))}
             || {Name, V} <- Table, byte_size(term_to_binary(V)) < 1 bsl 20],
    ok = file:write_file(filename:join(OutDir, "texts.bert"), term_to_binary(Texts));
main(_) ->
    io:format(standard_error, "usage: escript matrix_table.escript OUTDIR~n", []),
    halt(1).

values() ->
    [%% integers: each encoding (SMALL_INTEGER, INTEGER, SMALL_BIG, LARGE_BIG) and its edges
     {int_zero, 0}, {int_small, 42}, {int_255, 255}, {int_256, 256}, {int_neg, -1},
     {int32_max, 2147483647}, {int32_min, -2147483648}, {int_2_31, 2147483648}, {int_neg_2_31_1, -2147483649},
     {int64_max, 9223372036854775807}, {int64_min, -9223372036854775808},
     {int_2_64, 18446744073709551616}, {int_neg_2_64, -18446744073709551616},
     {big_2_1000, 1 bsl 1000}, {big_neg_7_300, -pow(7, 300)}, {big_large, (1 bsl 2100) + 12345},
     %% floats
     {float_one, 1.0}, {float_tenth, 0.1}, {float_sum, 0.1 + 0.2}, {float_neg, -2.5},
     {float_big, 1.0e300}, {float_max, 1.7976931348623157e308}, {float_tiny, 5.0e-324},
     {float_neg_zero, -0.0}, {float_pi, math:pi()}, {float_2_53, 9007199254740993.0},
     %% atoms
     {atom_ok, ok}, {atom_empty, ''}, {atom_space, 'hello world'}, {atom_caps, 'Caps'},
     {atom_true, true}, {atom_unicode, 'héllo☃'}, {atom_long, list_to_atom(lists:duplicate(255, $a))},
     %% binaries
     {bin_empty, <<>>}, {bin_text, <<"hello">>}, {bin_zeros, <<0, 0, 1, 0, 255, 0>>},
     {bin_all_bytes, list_to_binary(lists:seq(0, 255))}, {bin_utf8, <<"héllo ☃ 😀"/utf8>>},
     {bin_8mib, big_binary()},
     %% lists and strings
     {list_empty, []}, {list_ints, [1, 2, 3]}, {list_nested, [[], [[]], [1, [2, [3]]]]},
     {list_mixed, [1, a, <<"b">>, 2.5, {c}, [], 1 bsl 70]}, {string, "abc"},
     {string_unicode, [104, 233, 9731, 128512]}, {list_long, lists:seq(1, 1000)},
     {list_deep, lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, 100))},
     {list_improper, [1, 2 | 3]}, {list_improper_nested, [a, [b | c] | {d}]},
     %% tuples
     {tuple_empty, {}}, {tuple_one, {a}}, {tuple_nested, {1, {2, {3, {}}}, [{x, y}], <<"z">>}},
     {tuple_large, list_to_tuple(lists:seq(1, 300))},
     %% maps
     {map_empty, #{}}, {map_mixed, #{a => 1, <<"k">> => [2], 3 => {x}}},
     %% BERT complex types
     {bert_nil, {bert, nil}}, {bert_true, {bert, true}}, {bert_false, {bert, false}},
     {bert_dict, {bert, dict, [{<<"k">>, 1}, {a, [2]}, {<<"n">>, {bert, nil}}]}},
     {bert_dict_empty, {bert, dict, []}},
     {bert_time, {bert, time, 1255, 295581, 446228}},
     {bert_regex, {bert, regex, <<"^a.*b$">>, [caseless]}},
     {bert_regex_opts, {bert, regex, <<"a b # comment">>, [caseless, extended, multiline]}},
     {bert_nested, {bert, dict, [{<<"list">>, [{bert, true}, {bert, false}, {bert, nil}]}]}},
     %% the terms only Erlang makes: funs, bit strings, pids, ports (V4_PORT_EXT past 32 bits), refs
     {fun_export, fun lists:map/2}, {fun_local, adder(<<"x">>)}, {fun_local_nested, [adder(adder(1.5))]},
     {bits_3, <<5:3>>}, {bits_long, <<1, 2, 255, 3:5>>},
     {pid, foreign(88, <<0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 2>>)},
     {port, foreign(89, <<0, 0, 0, 9, 0, 0, 0, 5>>)},
     {port_v4, foreign(120, <<0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 5>>)},
     {ref, binary_to_term(<<131, 90, 0, 3, 100, 0, 10, "other@host", 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2,
                           0, 0, 0, 3>>)},
     {erlang_mixed, {self(), [make_ref(), hd(erlang:ports())], fun erlang:'+'/2, <<1:1>>}}].

%% A fun closing over V (made at run time, so the compiler cannot fold it away).
adder(V) ->
    fun(X) -> {X, V} end.

%% A pid (88) or port (89, 120) of the node 'other@host'.
foreign(Tag, Fields) ->
    binary_to_term(<<131, Tag, 100, 0, 10, "other@host", Fields/binary>>).

pow(_, 0) -> 1;
pow(B, N) -> B * pow(B, N - 1).

%% 8 MiB whose bytes repeat every 251 (so every byte value, zeros included, at shifting offsets).
big_binary() ->
    Size = 8 * 1024 * 1024,
    Period = list_to_binary([I rem 256 || I <- lists:seq(0, 250)]),
    binary:part(binary:copy(Period, Size div 251 + 1), 0, Size).
