%% shared: state kept in one Erlang process, registered with global, used by the
%% native modules of two bertd servers whose nodes are connected (tests).
-module(shared).
-export([connect/1, start/1, put/3, get/2, home/1]).

connect(NodeBin) ->
    Node = binary_to_atom(NodeBin, utf8),
    Ok = net_kernel:connect_node(Node),
    global:sync(),
    Ok.

start(NameBin) ->
    Name = binary_to_atom(NameBin, utf8),
    Pid = spawn(fun() -> loop(#{}) end),
    yes = global:register_name(Name, Pid),
    node(Pid).

put(NameBin, Key, Value) ->
    call(NameBin, {put, Key, Value}).

get(NameBin, Key) ->
    call(NameBin, {get, Key}).

home(NameBin) ->
    case global:whereis_name(binary_to_atom(NameBin, utf8)) of
        undefined -> undefined;
        Pid -> node(Pid)
    end.

call(NameBin, Msg) ->
    case global:whereis_name(binary_to_atom(NameBin, utf8)) of
        undefined -> no_such_process;
        Pid ->
            Ref = make_ref(),
            Pid ! {self(), Ref, Msg},
            receive {Ref, Answer} -> Answer after 5000 -> timeout end
    end.

loop(State) ->
    receive
        {From, Ref, {put, K, V}} -> From ! {Ref, ok}, loop(State#{K => V});
        {From, Ref, {get, K}} -> From ! {Ref, maps:get(K, State, undefined)}, loop(State)
    end.
