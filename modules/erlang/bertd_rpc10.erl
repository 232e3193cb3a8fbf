%% bertd_rpc10.erl: BERT-RPC 1.0's info packets as bertd_client writes and reads them
%% (doc/info-packets.md): the {info, accept | cache | callback | stream, ...} frames before a request,
%% a cache info's options, a streamed request's pieces and a streamed answer's sink. It never yields
%% an empty piece (four zero bytes end a stream) nor one longer than the chunk size it was given, and
%% never collects more of an answer's stream than the bound it was given.
-module(bertd_rpc10).

-export([infos/2, read_cache_options/1, source/1, next_piece/2, sink/2, feed/2, result/1]).

-export_type([source/0, sink/0]).

%% A streamed request's chunks: a list of iodata, a fun() -> iodata() | eof called until eof, or
%% {fun(State) -> {iodata(), State} | eof, State0}.
-type source() :: [iodata()] | fun(() -> iodata() | eof) | {fun((term()) -> {iodata(), term()} | eof), term()}.
%% Where a streamed answer's chunks go: collect (one binary, the default), a fun(Chunk) called for
%% each, or {fun(Chunk, Acc) -> Acc, Acc0}.
-type sink() :: collect | fun((binary()) -> term()) | {fun((binary(), term()) -> term()), term()}.

%% The infos the request options ask for, in the order the Python and Ruby clients send them:
%% accept, validation, callback, stream. Options: a map with any of accept, validation, callback,
%% stream_in. {error, {badarg, {Option, Why}}} for options that are wrong, before anything is sent.
-spec infos(call | cast | any, map()) -> {ok, [tuple()]} | {error, {badarg, term()}}.
infos(Kind, Options) ->
    Steps = [fun(O) -> accept_info(maps:find(accept, O)) end,
             fun(O) -> validation_info(maps:find(validation, O)) end,
             fun(O) -> callback_info(Kind, maps:find(callback, O)) end,
             fun(O) -> case maps:is_key(stream_in, O) of
                           true -> {ok, [{info, stream, []}]};
                           false -> {ok, []}
                       end end],
    lists:foldl(fun(_, {error, _} = E) -> E;
                   (Step, {ok, Acc}) ->
                        case Step(Options) of
                            {ok, More} -> {ok, Acc ++ More};
                            Error -> Error
                        end
                end, {ok, []}, Steps).

accept_info(error) -> {ok, []};
accept_info({ok, Kind}) when is_atom(Kind) -> accept_info({ok, [Kind]});
accept_info({ok, Kinds}) when is_list(Kinds) ->
    case Kinds -- [stream, cache] of
        [] when Kinds =/= [] -> {ok, [{info, accept, Kinds}]};
        _ -> {error, {badarg, {accept, {must_name_stream_or_cache, Kinds}}}}
    end;
accept_info({ok, Bad}) -> {error, {badarg, {accept, {must_name_stream_or_cache, Bad}}}}.

validation_info(error) -> {ok, []};
validation_info({ok, Token}) ->
    case token(Token) of
        {ok, T} -> {ok, [{info, cache, [{validation, T}]}]};
        error -> {error, {badarg, {validation, {not_a_binary, Token}}}}
    end.

callback_info(_Kind, error) -> {ok, []};
callback_info(Kind, {ok, _}) when Kind =/= cast -> {error, {badarg, {callback, only_with_a_cast}}};
callback_info(cast, {ok, {Service, M, F, A} = CB}) when is_atom(M), is_atom(F), is_list(A) ->
    case token(Service) of
        {ok, S} ->
            case binary:match(S, <<":">>) of
                nomatch -> {error, {badarg, {callback, {service_is_not_host_port, CB}}}};
                _ -> {ok, [{info, callback, [{service, S}, {mfa, M, F, A}]}]}
            end;
        error -> {error, {badarg, {callback, {service_is_not_host_port, CB}}}}
    end;
callback_info(cast, {ok, Bad}) -> {error, {badarg, {callback, {not_service_m_f_a, Bad}}}}.

token(B) when is_binary(B) -> {ok, B};
token(L) when is_list(L) -> try {ok, iolist_to_binary(L)} catch error:badarg -> error end;
token(_) -> error.

%% A map of a cache info's options (#{access => public, expiration => 60, validation => <<"t">>});
%% options this client does not know are kept. error for a shape the specification does not allow.
-spec read_cache_options(term()) -> {ok, map()} | error.
read_cache_options(Options) when is_list(Options) ->
    try {ok, maps:from_list([cache_option(O) || O <- Options])}
    catch throw:bad -> error
    end;
read_cache_options(_) ->
    error.

cache_option({access, A}) when A =:= public; A =:= private -> {access, A};
cache_option({expiration, S}) when is_integer(S), S >= 0 -> {expiration, S};
cache_option({validation, T}) when is_binary(T) -> {validation, T};
cache_option({K, _}) when K =:= access; K =:= expiration; K =:= validation -> throw(bad);
cache_option({K, V}) when is_atom(K) -> {K, V};
cache_option(_) -> throw(bad).

%% ---------------------------------------------------------------------------------------------
%% A streamed request's pieces

-spec source(term()) -> {ok, term()} | {error, {badarg, term()}}.
source(L) when is_list(L) -> {ok, {list, L, <<>>}};
source(F) when is_function(F, 0) -> {ok, {fun0, F, <<>>}};
source({F, S}) when is_function(F, 1) -> {ok, {unfold, F, S, <<>>}};
source(Bad) -> {error, {badarg, {stream_in, Bad}}}.

%% The next piece to send (a non-empty binary of at most Size bytes), or eof.
-spec next_piece(term(), pos_integer()) -> {ok, binary(), term()} | eof | {error, {badarg, term()}}.
next_piece(Src, Size) ->
    case pending(Src) of
        <<Piece:Size/binary, Rest/binary>> -> {ok, Piece, with_pending(Src, Rest)};
        <<>> -> refill(Src, Size);
        Piece -> {ok, Piece, with_pending(Src, <<>>)}
    end.

refill(Src, Size) ->
    case next_item(Src) of
        {ok, Item, Src1} ->
            try iolist_to_binary(Item) of
                Bin -> next_piece(with_pending(Src1, Bin), Size)
            catch error:badarg -> {error, {badarg, {stream_in, {not_iodata, Item}}}}
            end;
        {bad, Why} ->
            {error, {badarg, {stream_in, Why}}};
        eof ->
            eof
    end.

next_item({list, [], _}) -> eof;
next_item({list, [Item | Rest], P}) -> {ok, Item, {list, Rest, P}};
next_item({fun0, F, _} = Src) ->
    case F() of
        eof -> eof;
        Item -> {ok, Item, Src}
    end;
next_item({unfold, F, S, P}) ->
    case F(S) of
        eof -> eof;
        {Item, S1} -> {ok, Item, {unfold, F, S1, P}};
        Bad -> {bad, {not_chunk_and_state, Bad}}
    end.

pending(Src) -> element(tuple_size(Src), Src).
with_pending(Src, P) -> setelement(tuple_size(Src), Src, P).

%% ---------------------------------------------------------------------------------------------
%% A streamed answer's sink

%% A sink's state; MaxCollect bounds what `collect` holds.
-spec sink(sink(), non_neg_integer()) -> {ok, term()} | {error, {badarg, term()}}.
sink(collect, Max) -> {ok, {collect, Max, 0, []}};
sink(F, _) when is_function(F, 1) -> {ok, {each, F}};
sink({F, Acc}, _) when is_function(F, 2) -> {ok, {fold, F, Acc}};
sink(Bad, _) -> {error, {badarg, {stream_out, Bad}}}.

%% Gives one chunk to the sink. A sink fun that fails ends the stream: {error, {stream_out, {C, R}}}.
-spec feed(binary(), term()) -> {ok, term()} | {error, term()}.
feed(Chunk, {collect, Max, Size, Acc}) ->
    case Size + byte_size(Chunk) of
        N when N > Max -> {error, {max_stream, Max}};
        N -> {ok, {collect, Max, N, [Chunk | Acc]}}
    end;
feed(Chunk, {each, F} = S) ->
    try F(Chunk) of _ -> {ok, S}
    catch C:R -> {error, {stream_out, {C, R}}}
    end;
feed(Chunk, {fold, F, Acc}) ->
    try F(Chunk, Acc) of Acc1 -> {ok, {fold, F, Acc1}}
    catch C:R -> {error, {stream_out, {C, R}}}
    end.

%% What the answer's `stream` holds once the stream ended: the bytes, ok, or the fold's Acc.
-spec result(term()) -> term().
result({collect, _, _, Acc}) -> iolist_to_binary(lists:reverse(Acc));
result({each, _}) -> ok;
result({fold, _, Acc}) -> Acc.
