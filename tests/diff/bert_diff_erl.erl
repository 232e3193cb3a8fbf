%% bert_diff_erl: the Erlang half of the codec's differential test, compiled into
%% a temporary directory by test_codec_diff.py. It only reads and writes the files
%% it is given and halts with a non-zero status when a check fails.
%%
%%   check(File): File holds {Description, Hex} or {Description, Hex, ErnieHex}
%%     terms written by bert_diff. Each Description is rebuilt into a term here,
%%     independently of the bytes (but closures, rebuilt from theirs); the bytes
%%     must decode to it (=:=), term_to_binary/1 of it must be the bytes, and
%%     term_to_binary(T, [{minor_version, 0}]) the Ernie-form bytes.
%%   gen(Seed, Count, File): writes Count random terms as records
%%     <<0, Len:32, term_to_binary(T)>> or, for some,
%%     <<1, Len:32, term_to_binary(T, [compressed]), Len2:32, term_to_binary(T)>> or
%%     <<2, Len:32, term_to_binary(T, [{minor_version, 0}]), Len2:32, term_to_binary(T)>>.
-module(bert_diff_erl).
-export([check/1, gen/1]).

check([File]) ->
    {ok, Records} = file:consult(File),
    Failures = lists:filtermap(fun check_one/1, lists:zip(lists:seq(1, length(Records)), Records)),
    [io:format("~ts~n", [F]) || F <- lists:sublist(Failures, 20)],
    io:format("checked ~b terms, ~b failures~n", [length(Records), length(Failures)]),
    halt(case Failures of [] -> 0; _ -> 1 end).

check_one({N, {Desc, Hex}}) -> check_one({N, {Desc, Hex, none}});
check_one({N, {Desc, Hex, ErnieHex}}) ->
    Bytes = h(Hex),
    try build(Desc) of
        Expected ->
            case compare(N, Expected, Bytes) of
                false when ErnieHex =/= none -> compare_ernie(N, Expected, h(ErnieHex));
                Result -> Result
            end
    catch
        C:E -> {true, io_lib:format("#~b: cannot build ~tP: ~p:~P", [N, Desc, 12, C, E, 12])}
    end.

compare_ernie(N, Expected, Bytes) ->
    case term_to_binary(Expected, [{minor_version, 0}]) of
        Bytes -> false;
        Other -> {true, io_lib:format("#~b: ~tP: bert's Ernie form ~P, term_to_binary minor_version 0 ~P",
                                      [N, Expected, 12, Bytes, 40, Other, 40])}
    end.

compare(N, Expected, Bytes) ->
    Decoded = try binary_to_term(Bytes) catch C:E -> {decode_failed, C, E} end,
    Encoded = term_to_binary(Expected),
    if
        Decoded =/= Expected ->
            {true, io_lib:format("#~b: bytes ~P decode to ~tP, expected ~tP",
                                 [N, Bytes, 40, Decoded, 12, Expected, 12])};
        Encoded =/= Bytes ->
            {true, io_lib:format("#~b: ~tP: bert wrote ~P, term_to_binary ~P",
                                 [N, Expected, 12, Bytes, 40, Encoded, 40])};
        true ->
            false
    end.

%% Descriptions, as bert_diff writes them; bytes come as hex strings.
h(Hex) -> binary:decode_hex(list_to_binary(Hex)).

build({i, N}) -> N;
build({big, Neg, Magnitude}) ->
    V = binary:decode_unsigned(h(Magnitude), little),
    case Neg of 1 -> -V; 0 -> V end;
build({f, Bits}) -> <<F/float>> = <<Bits:64>>, F;
build({a, Utf8}) -> binary_to_atom(h(Utf8), utf8);
build({b, Bin}) -> h(Bin);
build({s, Chars}) -> binary_to_list(h(Chars));
build({t, Items}) -> list_to_tuple([build(I) || I <- Items]);
build({l, Items, nil}) -> [build(I) || I <- Items];
build({l, Items, Tail}) -> improper([build(I) || I <- Items], build(Tail));
build({m, Pairs}) -> maps:from_list([{build(K), build(V)} || {K, V} <- Pairs]);
build({pid, Node, Num, Serial, Creation}) ->
    binary_to_term(<<131, 88, (node_ext(Node))/binary, Num:32, Serial:32, Creation:32>>);
build({ref, Node, Ids, Creation}) ->
    binary_to_term(<<131, 90, (length(Ids)):16, (node_ext(Node))/binary, Creation:32,
                     (<< <<I:32>> || I <- Ids >>)/binary>>);
build({port, Node, Id, Creation}) ->
    binary_to_term(<<131, 120, (node_ext(Node))/binary, Id:64, Creation:32>>);
build({export, M, F, A}) -> erlang:make_fun(binary_to_atom(h(M), utf8), binary_to_atom(h(F), utf8), A);
build({closure, Bytes}) -> binary_to_term(<<131, (h(Bytes))/binary>>);
build({bits, Bytes, Bits}) ->
    B = h(Bytes),
    Len = 8 * (byte_size(B) - 1) + Bits,
    <<X:Len/bitstring, _/bitstring>> = B,
    X.

improper([X], Tail) -> [X | Tail];
improper([X | Rest], Tail) -> [X | improper(Rest, Tail)].

node_ext(Node) when is_list(Node) -> node_ext(h(Node));
node_ext(Node) ->
    <<131, Ext/binary>> = term_to_binary(binary_to_atom(Node, utf8)),
    Ext.

%% --- random terms --------------------------------------------------------

gen([SeedS, CountS, File]) ->
    rand:seed(exsss, list_to_integer(SeedS)),
    Count = list_to_integer(CountS),
    {ok, Out} = file:open(File, [write, raw, binary]),
    lists:foreach(fun(I) -> ok = file:write(Out, record(I, term(rand:uniform(5) - 1))) end, lists:seq(1, Count)),
    ok = file:close(Out),
    halt(0).

record(I, T) when I rem 5 =:= 0 ->
    C = term_to_binary({T, T, T}, [{compressed, 9}]),
    P = term_to_binary({T, T, T}),
    <<1, (byte_size(C)):32, C/binary, (byte_size(P)):32, P/binary>>;
record(I, T) when I rem 5 =:= 1 ->
    E = term_to_binary(T, [{minor_version, 0}]),
    P = term_to_binary(T),
    <<2, (byte_size(E)):32, E/binary, (byte_size(P)):32, P/binary>>;
record(_, T) ->
    B = term_to_binary(T),
    <<0, (byte_size(B)):32, B/binary>>.

pick(List) -> lists:nth(rand:uniform(length(List)), List).

term(0) -> leaf();
term(Depth) ->
    case rand:uniform(100) of
        N when N =< 10 -> list_to_tuple([term(Depth - 1) || _ <- lists:seq(1, rand:uniform(6) - 1)]);
        N when N =< 20 -> [term(Depth - 1) || _ <- lists:seq(1, rand:uniform(6) - 1)];
        N when N =< 27 -> improper([term(Depth - 1) || _ <- lists:seq(1, rand:uniform(4))], improper_tail(Depth - 1));
        N when N =< 33 -> maps:from_list([{key(Depth - 1), term(Depth - 1)} || _ <- lists:seq(1, map_size())]);
        34 -> list_to_tuple([leaf() || _ <- lists:seq(1, 250 + rand:uniform(20))]);
        35 when Depth > 2 -> [rand:uniform(256) - 1 || _ <- lists:seq(1, 65530 + rand:uniform(10))];
        _ -> leaf()
    end.

%% Up to 32 keys: beyond that Erlang writes maps in hash order.
map_size() ->
    case rand:uniform(4) of 1 -> rand:uniform(33) - 1; _ -> rand:uniform(6) - 1 end.

%% Map keys lean on what decides key order: mixed integers and floats, nesting.
key(Depth) ->
    case rand:uniform(4) of
        1 -> pick([rand:uniform(5), float(rand:uniform(5)), rand:uniform(5) + 0.5, -rand:uniform(5)]);
        2 when Depth > 0 -> {key(Depth - 1)};
        3 when Depth > 0 -> [key(Depth - 1)];
        _ -> term(Depth)
    end.

improper_tail(Depth) ->
    case term(Depth) of
        L when is_list(L) -> {L};  % a list tail would just extend the list
        T -> T
    end.

leaf() ->
    case rand:uniform(17) of
        1 -> rand:uniform(256) - 1;
        2 -> rand:uniform(1 bsl 32) - (1 bsl 31) - 1;
        3 -> rand:uniform(1 bsl 64) - (1 bsl 63) - 1;
        4 -> bignum();
        5 -> random_float();
        6 -> (rand:uniform() - 0.5) * math:pow(10, rand:uniform(40) - 20);
        7 -> atom();
        8 -> atom();
        9 -> list_to_binary([rand:uniform(256) - 1 || _ <- lists:seq(1, rand:uniform(20) - 1)]);
        10 -> [rand:uniform(256) - 1 || _ <- lists:seq(1, rand:uniform(8) - 1)];
        11 -> pid();
        12 -> ref();
        13 -> port();
        14 -> pick([[], 0, 255, 256, -1, 1 bsl 31, -(1 bsl 31), (1 bsl 31) - 1, -(1 bsl 31) - 1,
                    1 bsl 63, -(1 bsl 63), (1 bsl 64), 0.0, -0.0, '', <<>>, {}, #{}]);
        15 -> erlang:make_fun(atom(), atom(), rand:uniform(256) - 1);
        16 -> closure(rand:uniform(3));
        17 -> <<(random_bytes(rand:uniform(6) - 1))/binary, (rand:uniform(128) - 1):(rand:uniform(7))>>
    end.

%% Closures of this module, with free variables of every kind (floats among them).
closure(1) -> fun() -> ok end;
closure(2) -> X = term(1), fun() -> X end;
closure(3) -> X = leaf(), Y = random_float(), fun(Z) -> {X, Y, Z} end.

bignum() ->
    Bytes = case rand:uniform(4) of 1 -> 250 + rand:uniform(150); _ -> 8 + rand:uniform(12) end,
    V = binary:decode_unsigned(random_bytes(Bytes)) bor (1 bsl (8 * Bytes - 1)),
    pick([V, -V]).

random_bytes(N) -> list_to_binary([rand:uniform(256) - 1 || _ <- lists:seq(1, N)]).

random_float() ->
    <<F/float>> = <<(rand:uniform(2) - 1):1, (rand:uniform(2047) - 1):11, (rand:uniform(1 bsl 52) - 1):52>>,
    F.

atom() ->
    Chars = case rand:uniform(6) of
                1 -> [pick([$a, $z, $_, $@, $0]) || _ <- lists:seq(1, rand:uniform(10))];
                2 -> [127 + rand:uniform(128) || _ <- lists:seq(1, rand:uniform(10))];
                3 -> [pick([16#3b1, 16#4e2d, 16#1f600, 16#10ffff, 16#e9, $a]) || _ <- lists:seq(1, rand:uniform(10))];
                4 -> lists:duplicate(255, pick([$a, 16#e9, 16#3b1, 16#1f600]));
                5 -> [];
                _ -> "ok"
            end,
    list_to_atom(Chars).

node_name() ->
    pick([<<"a@b">>, <<"bertd@localhost">>, <<"n", (integer_to_binary(rand:uniform(9)))/binary, "@h">>,
          unicode:characters_to_binary([16#3b1, $@, $h]), <<"nohost">>]).

node_ext_random() -> node_ext(node_name()).

pid() ->
    binary_to_term(<<131, 88, (node_ext_random())/binary, (rand:uniform(1 bsl 32) - 1):32,
                     (rand:uniform(1 bsl 32) - 1):32, (rand:uniform(1 bsl 32) - 1):32>>).

ref() ->
    N = rand:uniform(5),
    binary_to_term(<<131, 90, N:16, (node_ext_random())/binary, (rand:uniform(1 bsl 32) - 1):32,
                     (<< <<(rand:uniform(1 bsl 32) - 1):32>> || _ <- lists:seq(1, N) >>)/binary>>).

port() ->
    Id = pick([rand:uniform(1 bsl 28) - 1, rand:uniform(1 bsl 64) - 1, 1 bsl 28, (1 bsl 28) - 1]),
    binary_to_term(<<131, 120, (node_ext_random())/binary, Id:64, (rand:uniform(1 bsl 32) - 1):32>>).
