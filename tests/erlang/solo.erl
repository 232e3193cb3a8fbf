%% solo: a native module with no external module of the same name (tests).
-module(solo).
-export([hello/1]).

hello(Name) -> <<"hello ", Name/binary>>.
