%% bertd_client.erl: a BERT-RPC client for bertd (or any BERT-RPC 1.0 server) over gen_tcp with
%% {packet, 4}: calls and casts, priority, timeouts, one-shot or persistent connections.
%% It never hands a caller an answer that belongs to another request: after a timeout or a broken
%% answer the connection is closed, never reused.
-module(bertd_client).
-behaviour(gen_server).

-export([connect/2, connect/3, close/1, call/4, call/5, cast/4, cast/5, request_raw/2, request_raw/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-export_type([conn/0, error_answer/0, reason/0]).

%% A persistent connection (a process owned by the caller that connected), or {Host, Port} or
%% {Host, Port, [option()]} for one request on its own connection, as Ruby's bertrpc does.
-type conn() :: pid() | {inet:hostname() | inet:ip_address(), inet:port_number()}
              | {inet:hostname() | inet:ip_address(), inet:port_number(), [option()]}.
-type timeout_ms() :: non_neg_integer() | infinity.
-type option() :: {timeout, timeout_ms()}          % the whole exchange; default infinity
                | {connect_timeout, timeout_ms()}  % default: the timeout
                | {priority, high | low}           % sends {info, priority, [P]} before each request
                | {float_format, new | ernie}      % ernie: floats as FLOAT_EXT (minor_version 0)
                | safe.                            % decode answers with binary_to_term(B, [safe])
-type request_option() :: {timeout, timeout_ms()}
                        | {priority, high | low}
                        | {info, atom(), list()}.  % any other {info, Command, Options} frame
%% What the server answered: {error, {Type, Code, Class, Detail, Backtrace}}.
-type error_answer() :: {protocol | server | user | proxy | atom(), integer(), binary(), binary(), [binary()]}.
%% What went wrong on the client's side.
-type reason() :: timeout | closed | {connect, inet:posix() | timeout}
                | {send, term()} | {invalid_answer, term()} | {badarg, term()}.

-record(opts, {timeout = infinity :: timeout_ms(),
               connect_timeout = default :: timeout_ms() | default,
               priority = none :: high | low | none,
               %% term_to_binary's options: [{minor_version, 0}] writes floats as FLOAT_EXT, the only
               %% form a handler on Ernie's Ruby library (ruby-bert) reads.
               encode = [] :: [{minor_version, 0}],
               safe = false :: boolean()}).

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
          {ok, term()} | {error, error_answer() | reason()}.
call(Conn, Module, Function, Args, Options) ->
    request(Conn, call, Module, Function, Args, Options).

%% ok once the server answered {noreply}; the work may still be running.
-spec cast(conn(), atom(), atom(), list()) -> ok | {error, error_answer() | reason()}.
cast(Conn, Module, Function, Args) ->
    cast(Conn, Module, Function, Args, []).

-spec cast(conn(), atom(), atom(), list(), [request_option()]) -> ok | {error, error_answer() | reason()}.
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

%% Sends the infos and the request, reads one answer. {Result, Keep}: Keep is false when the
%% stream may be out of step (the socket must then be closed).
exchange_on(Socket, Opts, Kind, Request, Options) ->
    case request_frames(Opts, Options) of
        {ok, Infos, Timeout} ->
            Deadline = deadline(Timeout),
            case send_all(Socket, Infos ++ [encode(Request, Opts)]) of
                ok ->
                    case gen_tcp:recv(Socket, 0, remaining(Deadline)) of
                        {ok, Answer} -> {interpret(Kind, Answer, Opts#opts.safe), true};
                        {error, timeout} -> {{error, timeout}, false};
                        {error, closed} -> {{error, closed}, false};
                        {error, Reason} -> {{error, {recv, Reason}}, false}
                    end;
                {error, closed} ->
                    {{error, closed}, false};
                {error, timeout} ->  % send_timeout: the server stopped reading
                    {{error, timeout}, false};
                {error, Reason} ->
                    {{error, {send, Reason}}, false}
            end;
        Error ->
            {Error, true}
    end.

encode({raw, Bytes}, _Opts) -> Bytes;
encode({term, T}, #opts{encode = E}) -> term_to_binary(T, E).

request_frames(Opts, Options) ->
    request_frames(Options, Opts#opts.priority, [], Opts#opts.timeout, Opts).

request_frames([], Priority, Infos, Timeout, Opts) ->
    PriorityInfo = case Priority of
                       none -> [];
                       P -> [{term, {info, priority, [P]}}]
                   end,
    {ok, [encode(I, Opts) || I <- PriorityInfo ++ lists:reverse(Infos)], Timeout};
request_frames([{priority, P} | Rest], _, Infos, Timeout, Opts) when P =:= high; P =:= low ->
    request_frames(Rest, P, Infos, Timeout, Opts);
request_frames([{timeout, T} | Rest], Priority, Infos, _, Opts) when T =:= infinity; is_integer(T), T >= 0 ->
    request_frames(Rest, Priority, Infos, T, Opts);
request_frames([{info, Command, IOpts} | Rest], Priority, Infos, Timeout, Opts)
  when is_atom(Command), is_list(IOpts) ->
    request_frames(Rest, Priority, [{term, {info, Command, IOpts}} | Infos], Timeout, Opts);
request_frames([Bad | _], _, _, _, _) ->
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
        {reply, Reply} when Kind =/= cast -> {ok, Reply};
        {noreply} when Kind =:= cast -> ok;
        {noreply} when Kind =:= any -> noreply;
        {error, {Type, Code, Class, Detail, Trace}} when is_atom(Type), is_integer(Code) ->
            {error, {Type, Code, text(Class), text(Detail), trace(Trace)}};
        {error, {Type, Code, Detail}} when is_atom(Type), is_integer(Code) ->
            {error, {Type, Code, <<>>, text(Detail), []}};  % older servers
        Other -> {error, {invalid_answer, Other}}
    catch
        error:badarg -> {error, {invalid_answer, Answer}}
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
    case gen_tcp:connect(Host, Port, [binary, {packet, 4}, {active, false}, {nodelay, true} | SendTimeout],
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
