%% bertd_echo: a native echo for benchmarks and smoke tests. echo(X) returns X;
%% configure it as a native module with codepaths [build/ebin].
-module(bertd_echo).
-export([echo/1]).

echo(X) -> X.
