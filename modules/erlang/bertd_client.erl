%% bertd_client.erl: a BERT-RPC client for bertd (or any BERT-RPC 1.0 server) over gen_tcp with
%% {packet, 4}: calls and casts, priority, timeouts, one-shot or persistent connections, and
%% BERT-RPC 1.0's infos (bertd_rpc10): streamed requests and answers, cache infos, callbacks.
%% It never hands a caller an answer that belongs to another request: after a timeout or a broken
%% answer the connection is closed, never reused.
-module(bertd_client).
-behaviour(gen_server).

-export([connect/2, connect/3, close/1, call/4, call/5, cast/4, cast/5, request_raw/2, request_raw/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-export_type([conn/0, error_answer/0, reason/0, answer/0]).

%% At most this many infos may come before one answer (a server that sends nothing else is broken).
-define(MAX_INFOS, 64).

%% A persistent connection (a process owned by the caller that connected), or {Host, Port} or
%% {Host, Port, [option()]} for one request on its own connection, as Ruby's bertrpc does.
-type conn() :: pid() | {inet:hostname() | inet:ip_address(), inet:port_number()}
              | {inet:hostname() | inet:ip_address(), inet:port_number(), [option()]}.
-type timeout_ms() :: non_neg_integer() | infinity.
-type option() :: {timeout, timeout_ms()}          % the whole exchange; default infinity
                | {connect_timeout, timeout_ms()}  % default: the timeout
                | {priority, high | low}           % sends {info, priority, [P]} before each request
                | {float_format, new | ernie}      % ernie: floats as FLOAT_EXT (minor_version 0)
                | {chunk_size, pos_integer()}      % a streamed request's chunks; default 256 KiB
                | {max_chunk, pos_integer()}       % longest streamed answer chunk read; default 64 MiB
                | {max_stream, non_neg_integer()}  % most bytes a collected stream holds; default 64 MiB
                | safe.                            % decode answers with binary_to_term(B, [safe])
-type request_option() :: {timeout, timeout_ms()}
                        | {priority, high | low}
                        | {info, atom(), list()}   % any other {info, Command, Options} frame
                        %% BERT-RPC 1.0 (bertd_rpc10):
                        | {stream_in, bertd_rpc10:source()}   % streams the request
                        | {stream_out, bertd_rpc10:sink()}    % where a streamed answer's chunks go
                        | {accept, [stream | cache]}          % the result is {ok, answer()}
                        | {validation, binary()}              % the result is {ok, answer()}
                        | {callback, {Service :: binary() | string(), atom(), atom(), list()}}. % casts
%% What a request with accept or validation gives: the reply's value (undefined for {noreply}),
%% the cache info's options, whether the server said the token still holds, and the stream.
-type answer() :: #{value := term(), cache := map() | undefined, valid := boolean(),
                    streamed := boolean(), stream := term()}.
%% What the server answered: {error, {Type, Code, Class, Detail, Backtrace}}.
-type error_answer() :: {protocol | server | user | proxy | atom(), integer(), binary(), binary(), [binary()]}.
%% What went wrong on the client's side.
-type reason() :: timeout | closed | {connect, inet:posix() | timeout}
                | {send, term()} | {invalid_answer, term()} | {badarg, term()}
                | {max_stream, non_neg_integer()} | {stream_out, {atom(), term()}}.

-record(opts, {timeout = infinity :: timeout_ms(),
               connect_timeout = default :: timeout_ms() | default,
               priority = none :: high | low | none,
               %% term_to_binary's options: [{minor_version, 0}] writes floats as FLOAT_EXT, the only
               %% form a handler on Ernie's Ruby library (ruby-bert) reads.
               encode = [] :: [{minor_version, 0}],
               chunk_size = 256 * 1024 :: pos_integer(),
               max_chunk = 64 * 1024 * 1024 :: pos_integer(),
               max_stream = 64 * 1024 * 1024 :: non_neg_integer(),
               safe = false :: boolean()}).

%% One request's plan: its info frames (encoded), timeout, stream in, sink, and whether the caller
%% asked for an answer() (accept or validation).
-record(req, {frames = [] :: [binary()],
              timeout :: timeout_ms(),
              stream_in = none :: none | term(),
              sink = collect :: bertd_rpc10:sink(),
              detailed = false :: boolean()}).

-record(state, {owner_ref :: reference(),
                host, port,
                opts :: #opts{},
                socket = undefined :: gen_tcp:socket() | undefined}).

%% ---------------------------------------------------------------------------------------------
%% API

-spec connect(inet:hostname() | inet:ip_address(), inet:port_number()) -> {ok, pid()} | {error, reason()}.
connect(Host, Port) ->
    connect(Host, Port, []).

%% Opens a persistent connection, a process that lives until close/1 or until the caller exits.
%% A connection the server closed while idle is replaced before the next request.
-spec connect(inet:hostname() | inet:ip_address(), inet:port_number(), [option()]) ->
          {ok, pid()} | {error, reason()}.
connect(Host, Port, Options) ->
    case parse_options(Options, #opts{}) of
        {ok, Opts} ->
            {ok, Conn} = gen_server:start(?MODULE, {self(), Host, Port, Opts}, []),
            %% Connecting after init, so that a refused connection ends the process normally
            %% (a failing init would log a crash report).
            case gen_server:call(Conn, connect, infinity) of
                ok -> {ok, Conn};
                Error -> Error
            end;
        Error ->
            Error
    end.

-spec close(pid()) -> ok.
close(Conn) when is_pid(Conn) ->
    try gen_server:call(Conn, close, infinity) catch exit:_ -> ok end.

-spec call(conn(), atom(), atom(), list()) -> {ok, term()} | {error, error_answer() | reason()}.
call(Conn, Module, Function, Args) ->
    call(Conn, Module, Function, Args, []).

-spec call(conn(), atom(), atom(), list(), [request_option()]) ->
          {ok, term() | answer()} | {error, error_answer() | reason()}.
call(Conn, Module, Function, Args, Options) ->
    request(Conn, call, Module, Function, Args, Options).

%% ok once the server answered {noreply}; the work may still be running.
-spec cast(conn(), atom(), atom(), list()) -> ok | {error, error_answer() | reason()}.
cast(Conn, Module, Function, Args) ->
    cast(Conn, Module, Function, Args, []).

-spec cast(conn(), atom(), atom(), list(), [request_option()]) ->
          ok | {ok, answer()} | {error, error_answer() | reason()}.
cast(Conn, Module, Function, Args, Options) ->
    request(Conn, cast, Module, Function, Args, Options).

%% Sends Payload as the request frame exactly as given (it may be malformed) and interprets the
%% answer: {ok, Reply}, noreply, or an error. For tools and tests.
-spec request_raw(conn(), binary()) -> {ok, term()} | noreply | {error, error_answer() | reason()}.
request_raw(Conn, Payload) ->
    request_raw(Conn, Payload, []).

-spec request_raw(conn(), binary(), [request_option()]) ->
          {ok, term()} | noreply | {error, error_answer() | reason()}.
request_raw(Conn, Payload, Options) when is_binary(Payload) ->
    exchange(Conn, any, {raw, Payload}, Options).

%% ---------------------------------------------------------------------------------------------
%% Requests

%% The request travels as {term, T} (encoded with the connection's options) or {raw, Bytes}.
request(Conn, Kind, Module, Function, Args, Options)
  when is_atom(Module), is_atom(Function), is_list(Args) ->
    exchange(Conn, Kind, {term, {Kind, Module, Function, Args}}, Options);
request(_Conn, Kind, Module, Function, Args, _Options) ->
    {error, {badarg, {Kind, Module, Function, Args}}}.

exchange(Conn, Kind, Request, Options) when is_pid(Conn) ->
    try gen_server:call(Conn, {request, Kind, Request, Options}, infinity)
    catch exit:_ -> {error, closed}
    end;
exchange({Host, Port}, Kind, Request, Options) ->
    exchange({Host, Port, []}, Kind, Request, Options);
exchange({Host, Port, ConnOptions}, Kind, Request, Options) ->
    case parse_options(ConnOptions, #opts{}) of
        {ok, Opts} ->
            case open(Host, Port, Opts) of
                {ok, Socket} ->
                    try
                        {Result, _Keep} = exchange_on(Socket, Opts, Kind, Request, Options),
                        Result
                    after
                        gen_tcp:close(Socket)
                    end;
                Error ->
                    Error
            end;
        Error ->
            Error
    end;
exchange(Conn, _Kind, _Request, _Options) ->
    {error, {badarg, Conn}}.

%% Sends the infos, the request and its stream, reads the answer. {Result, Keep}: Keep is false
%% when the stream may be out of step (the socket must then be closed).
exchange_on(Socket, Opts, Kind, Request, Options) ->
    case plan(Kind, Opts, Options) of
        {ok, R} ->
            case send_all(Socket, R#req.frames ++ [encode(Request, Opts)]) of
                ok -> after_request(Socket, Opts, Kind, R);
                Error -> {send_error(Error), false}
            end;
        Error ->
            {Error, true}
    end.

after_request(Socket, Opts, Kind, R = #req{stream_in = none, timeout = T}) ->
    answer(Socket, Opts, Kind, R, deadline(T));
after_request(Socket, Opts, Kind, R = #req{stream_in = Src, timeout = T}) ->
    case send_stream(Socket, Src, Opts#opts.chunk_size) of
        ok -> answer(Socket, Opts, Kind, R, deadline(T));
        {error, {badarg, _}} = Bad -> {Bad, false};
        Error -> {early_answer(Socket, Opts, Error), false}
    end.

send_error({error, closed}) -> {error, closed};
send_error({error, timeout}) -> {error, timeout};  % send_timeout: the server stopped reading
send_error({error, Reason}) -> {error, {send, Reason}}.

%% A streamed request's chunks, then the zero-length end ({packet, 4} writes the headers).
send_stream(Socket, Src, Size) ->
    case bertd_rpc10:next_piece(Src, Size) of
        {ok, Piece, Src1} ->
            case gen_tcp:send(Socket, Piece) of
                ok -> send_stream(Socket, Src1, Size);
                Error -> Error
            end;
        eof -> gen_tcp:send(Socket, <<>>);
        {error, _} = Bad -> Bad
    end.

%% The server stopped reading the stream (a limit, a refused stream): its error answer, if that is
%% what it sent, is the caller's result. (The socket backend keeps what came before the server
%% closed readable after the failed send; the inet driver's would have dropped it.)
early_answer(Socket, Opts, SendError) ->
    case gen_tcp:recv(Socket, 0, 2000) of
        {ok, Bin} ->
            case interpret(any, Bin, Opts#opts.safe) of
                {error, {_, _, _, _, _}} = ServerError -> ServerError;
                _ -> send_error(SendError)
            end;
        _ ->
            send_error(SendError)
    end.

%% The infos before the answer, the answer, and the chunks of a streamed one.
answer(Socket, Opts, Kind, R, Deadline) ->
    Notes = #{cache => undefined, valid => false, streamed => false, stream => undefined},
    case read_head(Socket, Opts#opts.safe, Deadline, 0, Notes) of
        {{ok, Head, N = #{streamed := false}}, Keep} ->
            {result(Kind, R, Head, N), Keep};
        {{ok, {reply, _} = Head, N}, _} ->
            case read_stream(Socket, Opts, R) of
                {ok, Got} -> {result(Kind, R, Head, N#{stream := Got}), true};
                Error -> {Error, false}
            end;
        {{ok, Head, _}, _} ->  % chunks may follow: out of step
            {{error, {invalid_answer, {stream_head, Head}}}, false};
        Other ->
            Other
    end.

read_head(_Socket, _Safe, _Deadline, ?MAX_INFOS, _Notes) ->
    {{error, {invalid_answer, too_many_infos}}, false};
read_head(Socket, Safe, Deadline, N, Notes) ->
    case recv(Socket, remaining(Deadline)) of
        {ok, Bin} ->
            case try {ok, decode(Bin, Safe)} catch error:badarg -> error end of
                {ok, {info, Command, Options}} when is_atom(Command) ->
                    case note_info(Command, Options, Notes) of
                        {ok, Notes1} -> read_head(Socket, Safe, Deadline, N + 1, Notes1);
                        Error -> {Error, true}
                    end;
                {ok, Term} -> {{ok, Term, Notes}, true};
                error -> {{error, {invalid_answer, Bin}}, true}
            end;
        Error ->
            {Error, false}
    end.

%% Infos this client does not know modify nothing it knows: ignored, as the specification says.
note_info(stream, _, Notes) -> {ok, Notes#{streamed := true}};
note_info(valid, _, Notes) -> {ok, Notes#{valid := true}};
note_info(cache, Options, Notes) ->
    case bertd_rpc10:read_cache_options(Options) of
        {ok, Cache} -> {ok, Notes#{cache := Cache}};
        error -> {error, {invalid_answer, {info, cache, Options}}}
    end;
note_info(_, _, Notes) -> {ok, Notes}.

%% A streamed answer's chunks to the sink, each within the timeout, none over max_chunk (the
%% socket refuses a longer one before reading it: {error, emsgsize}).
read_stream(Socket, #opts{max_chunk = Max, max_stream = MaxStream}, #req{sink = Sink, timeout = T}) ->
    {ok, State} = bertd_rpc10:sink(Sink, MaxStream),
    ok = inet:setopts(Socket, [{packet_size, Max}]),
    case read_chunks(Socket, T, State, Max) of
        {ok, Got} ->
            ok = inet:setopts(Socket, [{packet_size, 0}]),
            {ok, Got};
        Error ->
            Error
    end.

read_chunks(Socket, T, State, Max) ->
    case recv(Socket, T) of
        {ok, <<>>} ->
            {ok, bertd_rpc10:result(State)};
        {ok, Chunk} ->
            case bertd_rpc10:feed(Chunk, State) of
                {ok, State1} -> read_chunks(Socket, T, State1, Max);
                Error -> Error
            end;
        {error, {recv, emsgsize}} ->
            {error, {invalid_answer, {chunk_over, Max}}};
        Error ->
            Error
    end.

recv(Socket, Timeout) ->
    case gen_tcp:recv(Socket, 0, Timeout) of
        {ok, Bin} -> {ok, Bin};
        {error, timeout} -> {error, timeout};
        {error, closed} -> {error, closed};
        {error, Reason} -> {error, {recv, Reason}}
    end.

%% What the caller gets: an answer() when it asked for one, else the value (a stream it did not
%% ask for, from a server that streams anyway, gathered as its bytes).
result(_Kind, #req{detailed = true}, {reply, V}, Notes) -> {ok, Notes#{value => V}};
result(_Kind, #req{detailed = true}, {noreply}, Notes) -> {ok, Notes#{value => undefined}};
result(Kind, #req{detailed = true}, Head, _) -> interpret_term(Kind, Head);
result(_Kind, #req{}, _Head, #{streamed := true, stream := Got}) -> {ok, Got};
result(Kind, #req{}, Head, _) -> interpret_term(Kind, Head).

encode({raw, Bytes}, _Opts) -> Bytes;
encode({term, T}, #opts{encode = E}) -> term_to_binary(T, E).

%% The request's options as a plan: priority first, then the other infos in order, then
%% BERT-RPC 1.0's (bertd_rpc10:infos/2).
plan(Kind, Opts, Options) ->
    case plan(Options, Opts#opts.priority, [], #{}, #req{timeout = Opts#opts.timeout}) of
        {ok, Priority, Infos, Rpc10, R} ->
            case bertd_rpc10:infos(Kind, Rpc10) of
                {ok, More} ->
                    PriorityInfo = [{info, priority, [P]} || P <- [Priority], P =/= none],
                    All = PriorityInfo ++ lists:reverse(Infos) ++ More,
                    {ok, R#req{frames = [encode({term, I}, Opts) || I <- All],
                               detailed = maps:is_key(accept, Rpc10) orelse maps:is_key(validation, Rpc10)}};
                Error ->
                    Error
            end;
        Error ->
            Error
    end.

plan([], Priority, Infos, Rpc10, R) ->
    {ok, Priority, Infos, Rpc10, R};
plan([{priority, P} | Rest], _, Infos, Rpc10, R) when P =:= high; P =:= low ->
    plan(Rest, P, Infos, Rpc10, R);
plan([{timeout, T} | Rest], Priority, Infos, Rpc10, R) when T =:= infinity; is_integer(T), T >= 0 ->
    plan(Rest, Priority, Infos, Rpc10, R#req{timeout = T});
plan([{info, Command, IOpts} | Rest], Priority, Infos, Rpc10, R) when is_atom(Command), is_list(IOpts) ->
    plan(Rest, Priority, [{info, Command, IOpts} | Infos], Rpc10, R);
plan([{stream_in, Source} | Rest], Priority, Infos, Rpc10, R) ->
    case bertd_rpc10:source(Source) of
        {ok, Src} -> plan(Rest, Priority, Infos, Rpc10#{stream_in => true}, R#req{stream_in = Src});
        Error -> Error
    end;
plan([{stream_out, Sink} | Rest], Priority, Infos, Rpc10, R) ->
    case bertd_rpc10:sink(Sink, 0) of
        {ok, _} -> plan(Rest, Priority, Infos, Rpc10, R#req{sink = Sink});
        Error -> Error
    end;
plan([{Key, Value} | Rest], Priority, Infos, Rpc10, R) when Key =:= accept; Key =:= validation; Key =:= callback ->
    plan(Rest, Priority, Infos, Rpc10#{Key => Value}, R);
plan([Bad | _], _, _, _, _) ->
    {error, {badarg, Bad}}.

send_all(_Socket, []) ->
    ok;
send_all(Socket, [Frame | Rest]) ->
    case gen_tcp:send(Socket, Frame) of
        ok -> send_all(Socket, Rest);
        Error -> Error
    end.

interpret(Kind, Answer, Safe) ->
    try decode(Answer, Safe) of
        Term -> interpret_term(Kind, Term)
    catch
        error:badarg -> {error, {invalid_answer, Answer}}
    end.

interpret_term(Kind, Term) ->
    case Term of
        {reply, Reply} when Kind =/= cast -> {ok, Reply};
        {noreply} when Kind =:= cast -> ok;
        {noreply} when Kind =:= any -> noreply;
        {error, {Type, Code, Class, Detail, Trace}} when is_atom(Type), is_integer(Code) ->
            {error, {Type, Code, text(Class), text(Detail), trace(Trace)}};
        {error, {Type, Code, Detail}} when is_atom(Type), is_integer(Code) ->
            {error, {Type, Code, <<>>, text(Detail), []}};  % older servers
        Other -> {error, {invalid_answer, Other}}
    end.

decode(Bin, true) -> binary_to_term(Bin, [safe]);
decode(Bin, false) -> binary_to_term(Bin).

%% Class, Detail and backtrace lines are binaries by the spec; atoms and strings are taken too.
text(B) when is_binary(B) -> B;
text(A) when is_atom(A) -> atom_to_binary(A, utf8);
text(L) when is_list(L) ->
    try iolist_to_binary(L) catch error:badarg -> iolist_to_binary(io_lib:format("~p", [L])) end;
text(T) -> iolist_to_binary(io_lib:format("~p", [T])).

trace(L) when is_list(L) -> [text(X) || X <- L];
trace(_) -> [].

deadline(infinity) -> infinity;
deadline(Ms) -> erlang:monotonic_time(millisecond) + Ms.

remaining(infinity) -> infinity;
remaining(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

open(Host, Port, #opts{timeout = T, connect_timeout = CT}) ->
    Timeout = case CT of default -> T; _ -> CT end,
    SendTimeout = case T of infinity -> []; _ -> [{send_timeout, T}, {send_timeout_close, true}] end,
    case gen_tcp:connect(Host, Port, [{inet_backend, socket}, binary, {packet, 4}, {active, false}, {nodelay, true}
                                      | SendTimeout],
                         Timeout) of
        {ok, Socket} -> {ok, Socket};
        {error, Reason} -> {error, {connect, Reason}}
    end.

parse_options([], Opts) ->
    {ok, Opts};
parse_options([{timeout, T} | Rest], Opts) when T =:= infinity; is_integer(T), T >= 0 ->
    parse_options(Rest, Opts#opts{timeout = T});
parse_options([{connect_timeout, T} | Rest], Opts) when T =:= infinity; is_integer(T), T >= 0 ->
    parse_options(Rest, Opts#opts{connect_timeout = T});
parse_options([{priority, P} | Rest], Opts) when P =:= high; P =:= low ->
    parse_options(Rest, Opts#opts{priority = P});
parse_options([{float_format, new} | Rest], Opts) ->
    parse_options(Rest, Opts#opts{encode = []});
parse_options([{float_format, ernie} | Rest], Opts) ->
    parse_options(Rest, Opts#opts{encode = [{minor_version, 0}]});
parse_options([{chunk_size, N} | Rest], Opts) when is_integer(N), N > 0 ->
    parse_options(Rest, Opts#opts{chunk_size = N});
parse_options([{max_chunk, N} | Rest], Opts) when is_integer(N), N > 0 ->
    parse_options(Rest, Opts#opts{max_chunk = N});
parse_options([{max_stream, N} | Rest], Opts) when is_integer(N), N >= 0 ->
    parse_options(Rest, Opts#opts{max_stream = N});
parse_options([safe | Rest], Opts) ->
    parse_options(Rest, Opts#opts{safe = true});
parse_options([Bad | _], _Opts) ->
    {error, {badarg, Bad}}.

%% ---------------------------------------------------------------------------------------------
%% The persistent connection's process

init({Owner, Host, Port, Opts}) ->
    Ref = erlang:monitor(process, Owner),
    {ok, #state{owner_ref = Ref, host = Host, port = Port, opts = Opts}}.

handle_call(connect, _From, State) ->
    case ensure_socket(State) of
        {ok, S} -> {reply, ok, S};
        {Error, S} -> {stop, normal, Error, S}
    end;

handle_call({request, Kind, Request, Options}, _From, State) ->
    case ensure_socket(State) of
        {ok, S = #state{socket = Socket, opts = Opts}} ->
            case exchange_on(Socket, Opts, Kind, Request, Options) of
                {Result, true} ->
                    {reply, Result, S};
                {Result, false} ->
                    gen_tcp:close(Socket),
                    {reply, Result, S#state{socket = undefined}}
            end;
        {Error, S} ->
            {reply, Error, S}
    end;
handle_call(close, _From, State) ->
    {stop, normal, ok, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info({'DOWN', Ref, process, _, _}, State = #state{owner_ref = Ref}) ->
    {stop, normal, State};
handle_info(_Msg, State) ->
    {noreply, State}.

terminate(_Reason, #state{socket = undefined}) -> ok;
terminate(_Reason, #state{socket = Socket}) -> gen_tcp:close(Socket).

%% Between requests a BERT-RPC server sends nothing: anything waiting (bytes or a close) means
%% the connection cannot carry another request; the server never saw this one, so a new
%% connection is safe.
ensure_socket(S = #state{socket = undefined, host = Host, port = Port, opts = Opts}) ->
    case open(Host, Port, Opts) of
        {ok, Socket} -> {ok, S#state{socket = Socket}};
        Error -> {Error, S}
    end;
ensure_socket(S = #state{socket = Socket}) ->
    case gen_tcp:recv(Socket, 0, 0) of
        {error, timeout} ->
            {ok, S};
        _ ->
            gen_tcp:close(Socket),
            ensure_socket(S#state{socket = undefined})
    end.
