%% nat: the native module of the integration tests (tests/integration/test_erlang.py).
%% Small observable functions; never used outside tests.
-module(nat).
-export([add/2, echo/1, slow/1, boom/1, whoami/0, both/1, pick/1, pick_pred/1, atom_exists/1,
         note/2, notes/1]).

add(A, B) -> A + B.
echo(X) -> X.
slow(Ms) -> timer:sleep(Ms), Ms.
boom(X) -> error({boom, X}).
whoami() -> node().
%% nat exports both/1 and the external nat handler has it too: native shadows external.
both(X) -> {native, X}.
%% pick_pred decides: native for numbers above 10, else the external module.
pick(X) -> {native, X}.
pick_pred(X) -> X > 10.
atom_exists(Bin) ->
    try binary_to_existing_atom(Bin, utf8) of _ -> true catch error:badarg -> false end.
%% A cast leaves a note in a public ets table a later call can read.
note(Key, Value) ->
    ensure_table(),
    ets:insert(nat_notes, {Key, Value}),
    ok.
notes(Key) ->
    ensure_table(),
    [V || {_, V} <- ets:lookup(nat_notes, Key)].

ensure_table() ->
    case ets:whereis(nat_notes) of
        undefined ->
            Self = self(),
            spawn(fun() ->
                ets:new(nat_notes, [named_table, public, bag]),
                Self ! ready,
                receive stop -> ok end
            end),
            receive ready -> ok after 1000 -> ok end;
        _ -> ok
    end.
