%% grow, first version: exports a/0 only (tests: export lists refresh on reload).
-module(grow).
-export([a/0]).

a() -> native_a.
