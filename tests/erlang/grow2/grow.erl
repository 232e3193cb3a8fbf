%% grow, second version: exports b/0 too (tests: export lists refresh on reload).
-module(grow).
-export([a/0, b/0]).

a() -> native_a.
b() -> native_b.
