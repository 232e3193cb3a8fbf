%% bertd_native: bertd's helper on the Erlang node that runs native modules. The
%% link calls it through rex; it decodes a client's arguments without creating
%% atoms, applies Ernie's predicate rule, catches everything, and returns the
%% BERT-RPC answer already encoded, so bertd relays bytes it never decodes.
%% It must never create an atom from client data, and never let an exception escape.
-module(bertd_native).
-export([call/4, cast/4, exports/1]).

%% The answer to {call, Module, Function, Args} as term_to_binary bytes, or the
%% atom fallback when Function_pred/Arity says the external module should serve it.
%% Args is a binary (Safe = true: binary_to_term(Args, [safe])) or a list.
call(ModBin, FunBin, Args0, Safe) ->
    case prepare(ModBin, FunBin, Args0, Safe) of
        {ok, Mod, Args} ->
            case route(Mod, FunBin, Args) of
                native -> term_to_binary(run(Mod, FunBin, Args));
                external -> fallback;
                {error, Answer} -> term_to_binary(Answer)
            end;
        {error, Answer} ->
            term_to_binary(Answer)
    end.

%% A cast: decides native or external now, runs the function in a process of its
%% own and answers {noreply} at once. Failures of the function go to the logger.
cast(ModBin, FunBin, Args0, Safe) ->
    case prepare(ModBin, FunBin, Args0, Safe) of
        {ok, Mod, Args} ->
            case route(Mod, FunBin, Args) of
                native ->
                    spawn(fun() ->
                        case run(Mod, FunBin, Args) of
                            {reply, _} -> ok;
                            {error, Error} -> logger:error("bertd cast ~ts:~ts failed: ~tp", [ModBin, FunBin, Error])
                        end
                    end),
                    term_to_binary({noreply});
                external -> fallback;
                {error, Answer} -> term_to_binary(Answer)
            end;
        {error, Answer} ->
            term_to_binary(Answer)
    end.

%% [{ModBin, [{FunBin, Arity}]} | {ModBin, {error, Why}}] for the modules bertd's
%% configuration names (never for client data), loading them if needed.
exports(Mods) ->
    [{M, module_exports(M)} || M <- Mods].

module_exports(ModBin) ->
    Mod = binary_to_atom(ModBin, utf8),
    case code:ensure_loaded(Mod) of
        {module, Mod} -> [{atom_to_binary(F, utf8), A} || {F, A} <- Mod:module_info(exports)];
        {error, Why} -> {error, Why}
    end.

%% ---- internals -------------------------------------------------------------------

prepare(ModBin, FunBin, Args0, Safe) ->
    case existing_atom(ModBin) of
        undefined ->
            {error, server_error(1, ["No such module '", ModBin, "'"])};
        Mod ->
            case decode_args(Args0, Safe) of
                {ok, Args} -> {ok, Mod, Args};
                {error, Why} -> {error, server_error(0, [Why, " (calling ", ModBin, ":", FunBin, ")"])}
            end
    end.

decode_args(Bin, true) when is_binary(Bin) ->
    try binary_to_term(Bin, [safe]) of
        Args when is_list(Args) -> {ok, Args};
        _ -> {error, "the arguments are not a list"}
    catch
        error:badarg ->
            {error, ["the arguments hold an atom unknown to node ", atom_to_list(node()),
                     " (bertd decodes client arguments with binary_to_term(Bin, [safe]);"
                     " erlang.trust_clients lifts that)"]}
    end;
decode_args(Args, false) when is_list(Args) -> {ok, Args};
decode_args(_, _) -> {error, "the arguments are not a list"}.

%% Ernie's rule: if Function_pred/Arity is exported it decides (true: native).
route(Mod, FunBin, Args) ->
    Arity = length(Args),
    case existing_atom(<<FunBin/binary, "_pred">>) of
        undefined -> native;
        Pred ->
            case erlang:function_exported(Mod, Pred, Arity) of
                false -> native;
                true ->
                    try apply(Mod, Pred, Args) of
                        true -> native;
                        _ -> external
                    catch
                        Class:Reason:Stack -> {error, user_error(Class, Reason, Stack)}
                    end
            end
    end.

run(Mod, FunBin, Args) ->
    case existing_atom(FunBin) of
        undefined ->
            no_such_function(Mod, FunBin);
        Fun ->
            try
                {reply, apply(Mod, Fun, Args)}
            catch
                Class:Reason:Stack ->
                    case {Class, Reason, Stack} of
                        %% undef raised by this very call, not by something it called
                        {error, undef, [{Mod, Fun, A, _} | _]} when is_list(A), length(A) =:= length(Args) ->
                            no_such_function(Mod, FunBin);
                        _ ->
                            user_error(Class, Reason, Stack)
                    end
            end
    end.

no_such_function(Mod, FunBin) ->
    server_error(2, ["No such function '", atom_to_binary(Mod, utf8), ":", FunBin, "'"]).

server_error(Code, Detail) ->
    {error, {server, Code, <<"ServerError">>, unicode:characters_to_binary(Detail), []}}.

%% The stack is the client's business down to the native function; bertd_native
%% and the rpc machinery below it are not.
user_error(Class, Reason, Stack) ->
    Own = lists:takewhile(fun(F) -> element(1, F) =/= ?MODULE end, Stack),
    {error, {user, 0, atom_to_binary(Class, utf8), one_line(Reason), [frame(F) || F <- Own]}}.

one_line(Term) ->
    Text = io_lib:format("~tp", [Term]),
    re:replace(Text, "\\s*\\n\\s*", " ", [global, unicode, {return, binary}]).

frame({M, F, A, Location}) ->
    Arity = if is_list(A) -> length(A); true -> A end,
    Where = case {proplists:get_value(file, Location), proplists:get_value(line, Location)} of
                {undefined, _} -> "";
                {File, undefined} -> [" (", File, ")"];
                {File, Line} -> [" (", File, ":", integer_to_list(Line), ")"]
            end,
    unicode:characters_to_binary(io_lib:format("~ts:~ts/~b~ts", [atom_to_list(M), atom_to_list(F), Arity, Where]));
frame(Other) ->
    one_line(Other).

existing_atom(Bin) ->
    try binary_to_existing_atom(Bin, utf8) catch error:badarg -> undefined end.
