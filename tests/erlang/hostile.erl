%% hostile: a native module whose calls fail with results built to cost the Erlang link far
%% more than their size (tests/integration/test_hostile_link.py). Never used outside tests.
-module(hostile).
-export([ok/1, flat/0, nested/0]).

ok(X) -> {ok, X}.
%% The call's process is killed with a reason of 4 million NILs: rex answers
%% {badrpc, {'EXIT', Reason}}, 4 MB on the wire (300 MB as a decoded Term), which
%% bertd_native never sees. (16 million cost the Erlang VM half a minute to build and send.)
flat() -> exit(self(), lists:duplicate(4 * 1024 * 1024, [])).
%% The same with a reason nested 100,000 tuples deep.
nested() -> exit(self(), nest(100000, [])).

nest(0, T) -> T;
nest(N, T) -> nest(N - 1, {T}).
