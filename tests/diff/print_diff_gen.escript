#!/usr/bin/env escript
%% print_diff_gen.escript: writes random terms for the printer's differential test, each
%% as term_to_binary plus OTP's own io_lib:print(T, 1, 16#FFFFFFF, -1) text in UTF-8.
%% Usage: print_diff_gen.escript Seed Count OutFile. It only generates; never compares.
-mode(compile).

main([SeedS, CountS, Out]) ->
    Seed = list_to_integer(SeedS),
    rand:seed(exsss, {Seed, Seed * 7 + 1, Seed * 13 + 2}),
    Terms = fixed() ++ [term(3) || _ <- lists:seq(1, list_to_integer(CountS))],
    Recs = [record(T) || T <- Terms],
    ok = file:write_file(Out, Recs),
    io:format("wrote ~b terms~n", [length(Recs)]);
main(_) ->
    io:format(standard_error, "usage: print_diff_gen.escript Seed Count OutFile~n", []),
    halt(2).

record(T) ->
    Bin = term_to_binary(T),
    Text = unicode:characters_to_binary(io_lib:print(T, 1, 16#FFFFFFF, -1)),
    [<<(byte_size(Bin)):32>>, Bin, <<(byte_size(Text)):32>>, Text].

%% Cases worth having in every run, whatever the seed.
fixed() ->
    [1.0, 0.1, 1.0e20, 1.0e-5, 123456789.0, -0.0, 0.0, 100.0, 1000.0, 0.0001, 1.2345e-4,
     9007199254740991.0, 9007199254740992.0, 5.0e-324, 1.7976931348623157e308, 2.2250738585072014e-308,
     'Abc', 'and', 'a b', '', 'maybe', 'else', 'a\'b', 'a\\b', '\x{1F600}', [], "", <<>>,
     [1 | 2], "a\n\t\e\"\\'", <<"abc">>, <<1, 2, 3>>, #{}, #{1 => a, 1.0 => b}, {},
     -(1 bsl 64), 1 bsl 64, -(1 bsl 63), (1 bsl 63) - 1, 1 bsl 63,
     fun lists:reverse/1, fun 'a b':'if'/0, erlang:make_fun('', 'a@b', 255), fun(X) -> X end,
     <<1:3>>, <<5, 1:3>>, <<"abc", 1:1>>, [<<1:7>> | <<2:2>>]].

pick(L) -> lists:nth(rand:uniform(length(L)), L).

term(0) -> leaf();
term(D) ->
    case rand:uniform(10) of
        N when N =< 5 -> leaf();
        6 -> list_to_tuple([term(D - 1) || _ <- lists:seq(1, rand:uniform(5) - 1)]);
        7 -> [term(D - 1) || _ <- lists:seq(1, rand:uniform(5) - 1)];
        8 -> improper(D);
        9 -> small_map(D);
        10 -> small_map(D)
    end.

improper(D) ->
    Tail = pick([a, 1, 2.5, <<"t">>, {x}, "", #{}]),
    lists:foldl(fun(E, Acc) -> [E | Acc] end, Tail, [term(D - 1) || _ <- lists:seq(1, rand:uniform(3))]).

%% Up to 32 keys: Erlang keeps these sorted. Big ones hold leaves only, to keep the file small.
small_map(D) ->
    case rand:uniform(3) of
        1 -> maps:from_list([{leaf(), leaf()} || _ <- lists:seq(1, rand:uniform(33) - 1)]);
        _ -> maps:from_list([{term(D - 1), term(D - 1)} || _ <- lists:seq(1, rand:uniform(5) - 1)])
    end.

leaf() ->
    case rand:uniform(12) of
        1 -> int();
        2 -> float();
        3 -> float();
        4 -> atom();
        5 -> string();
        6 -> binary();
        7 -> atom();
        8 -> string();
        9 -> pick([[], {}, #{}, <<>>, true, false, nil]);
        10 -> erlang:make_fun(fun_atom(), fun_atom(), rand:uniform(256) - 1);
        11 -> X = int(), pick([fun() -> X end, fun(Y) -> {X, Y} end]);
        12 -> <<(binary())/binary, (rand:uniform(64) - 1):(rand:uniform(7))>>
    end.

int() ->
    case rand:uniform(4) of
        1 -> rand:uniform(512) - 256;
        2 -> rand:uniform(1 bsl 40) - (1 bsl 39);
        3 -> (rand:uniform(1 bsl 64) - (1 bsl 63)) * pick([1, 2, 1 bsl 3]);
        4 -> (rand:uniform(1 bsl 200) - (1 bsl 199)) * (1 bsl rand:uniform(600))
    end.

float() ->
    F = case rand:uniform(7) of
        1 -> random_bits_float();
        2 -> rand:uniform(99999) * math:pow(10, rand:uniform(40) - 20);
        3 -> rand:uniform() * math:pow(10, rand:uniform(600) - 300);
        4 -> float(rand:uniform(1 bsl 54));
        5 -> float(rand:uniform(1000)) * pick([1.0, 10.0, 100.0, 1000.0, 0.1, 0.01, 0.001, 0.0001, 0.00001]);
        6 -> pick([1.0, 2.0, 0.5]) * math:pow(10, rand:uniform(620) - 320);
        7 -> rand:uniform(10000) / pick([1, 3, 7, 10, 100, 1000, 10000])
    end,
    pick([F, -F]).

random_bits_float() ->
    <<F/float>> = <<(rand:uniform(16#7FE0000000000000) - 1):64>>,
    F.

atom() ->
    Chars = case rand:uniform(8) of
        1 -> [pick(lists:seq($a, $z))] ++ name_chars(rand:uniform(8) - 1);
        2 -> atom_to_list(pick(['after', 'and', 'andalso', 'band', 'begin', 'bnot', 'bor', 'bsl', 'bsr', 'bxor',
                                'case', 'catch', 'cond', 'div', 'end', 'fun', 'if', 'let', 'not', 'of', 'or',
                                'orelse', 'receive', 'rem', 'try', 'when', 'xor', maybe, else, true, undefined]));
        3 -> [pick(lists:seq($A, $Z) ++ "_")] ++ name_chars(rand:uniform(5));
        4 -> [rand:uniform(256) - 1 || _ <- lists:seq(1, rand:uniform(6))];
        5 -> [pick(lists:seq(223, 255)) | name_chars(rand:uniform(4))];
        6 -> [rand:uniform(16#2FFF) || _ <- lists:seq(1, rand:uniform(4))];
        7 -> [pick(lists:seq($a, $z)), pick(" .-'\\\"!\n\t\e" ++ [0, 127, 128, 159, 160, 170, 181, 186, 215, 247])];
        8 -> ""
    end,
    list_to_atom(Chars).

%% ASCII only: erlang:fun_to_list/1 (and so ~p) gives the UTF-8 bytes of other
%% characters as if each were one, text that bertd does not copy (it writes the
%% characters themselves; test_funs_bits.cc says so).
fun_atom() ->
    Chars = case rand:uniform(4) of
        1 -> [pick(lists:seq($a, $z))] ++ [pick(lists:seq($a, $z) ++ "_@09AZ") || _ <- lists:seq(1, rand:uniform(6))];
        2 -> [rand:uniform(128) - 1 || _ <- lists:seq(1, rand:uniform(5))];
        3 -> atom_to_list(pick(['if', 'maybe', 'fun', 'end', 'Abc', '_x', 'a b', '']));
        4 -> [pick(" '\\\"\n\t\e" ++ [0, 127, $a, $Z])|| _ <- lists:seq(1, rand:uniform(4))]
    end,
    list_to_atom(Chars).

name_chars(N) ->
    [pick(lists:seq($a, $z) ++ lists:seq($A, $Z) ++ lists:seq($0, $9) ++ "_@" ++ lists:seq(192, 255))
     || _ <- lists:seq(1, N)].

string() ->
    N = rand:uniform(12),
    case rand:uniform(5) of
        1 -> [pick(lists:seq(32, 126)) || _ <- lists:seq(1, N)];
        2 -> [pick(lists:seq(32, 126) ++ lists:seq(160, 255) ++ "\n\r\t\v\b\f\e\"\\") || _ <- lists:seq(1, N)];
        3 -> [pick(lists:seq(0, 300)) || _ <- lists:seq(1, N)];
        4 -> [pick([$a, $b, 127, 128, 159, 256, 16#1F600, 7, 0, $\s]) || _ <- lists:seq(1, N)];
        5 -> [rand:uniform(16#10FFF) || _ <- lists:seq(1, N)]
    end.

binary() ->
    N = rand:uniform(16) - 1,
    case rand:uniform(4) of
        1 -> list_to_binary([pick(lists:seq(32, 126)) || _ <- lists:seq(1, N)]);
        2 -> list_to_binary([pick(lists:seq(32, 126) ++ lists:seq(160, 255) ++ "\n\t\e\"\\") || _ <- lists:seq(1, N)]);
        3 -> crypto_free_bytes(N);
        4 -> unicode:characters_to_binary([pick([$a, 233, 16#65E5, 16#1F600]) || _ <- lists:seq(1, N)])
    end.

crypto_free_bytes(N) -> list_to_binary([rand:uniform(256) - 1 || _ <- lists:seq(1, N)]).
