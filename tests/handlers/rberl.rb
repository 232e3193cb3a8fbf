# rberl.rb: Ruby's side of erlang_rpc/erlang_send for tests/integration/test_erlang.py: module
# `rberl` calls Erlang through bertd with Ernie.erlang_rpc and Ernie.erlang_send.
require 'ernie'

mod(:rberl) do
  fun(:rpc) do |node, m, f, args|
    begin
      Ernie.erlang_rpc(node.empty? ? nil : node, m, f, args)
    rescue Ernie::ErlangError => e
      ['ErlangError', e.message]
    end
  end
  fun(:send) do |node, name, msg|
    Ernie.erlang_send(node.empty? ? nil : node, name, msg)
    true
  end
end
