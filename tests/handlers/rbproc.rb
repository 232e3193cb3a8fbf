# rbproc.rb: a Ruby handler as a process of bertd's Erlang node, for tests/integration/test_erlang_node.py
# (module `rbproc`): the twin of pyproc.py. At start it registers `rbproc_events`: a message
# {ReplyTo, Payload} to that name makes the worker that runs it send {got, Payload, OsPid} to ReplyTo.
require 'ernie'

FORWARD = lambda do |message|
  reply_to, payload = message
  Ernie.erlang_send(reply_to, t[:got, payload, Process.pid])
end

Ernie.erlang_register_process(:rbproc_events, FORWARD)

def erlang_error(e)
  ['ErlangError', e.message]
end

mod(:rbproc) do
  fun(:me) { Ernie.self_pid }
  fun(:ospid) { Process.pid }
  fun(:echo) { |x| x }
  fun(:forward_next) do |dest, ms|
    Ernie.erlang_send(dest, Ernie.erlang_recv_message(ms / 1000.0))
    true
  end
  fun(:recv) do |ms|
    Ernie.erlang_recv_message(ms.negative? ? nil : ms / 1000.0)
  rescue Ernie::ErlangTimeout
    :timeout
  end
  fun(:recv_all) { |n, ms| Array.new(n) { Ernie.erlang_recv_message(ms / 1000.0) } }
  fun(:send) do |dest, msg|
    Ernie.erlang_send(dest, msg)
    true
  rescue Ernie::ErlangError => e
    erlang_error(e)
  end
  fun(:register) do |name|
    Ernie.erlang_register_process(name, FORWARD)
    true
  rescue Ernie::ErlangError => e
    erlang_error(e)
  end
  fun(:connect_and_call) do |node, n|
    handle = Ernie.erlang_connect(node)
    Array.new(n) { handle.rpc(:erlang, :node, []) }
  end
  fun(:rpc) do |node, m, f, args, ms|
    Ernie.erlang_rpc(node.empty? ? nil : node, m, f, args, timeout: ms.negative? ? nil : ms / 1000.0)
  rescue Ernie::ErlangError => e
    erlang_error(e)
  end
end
