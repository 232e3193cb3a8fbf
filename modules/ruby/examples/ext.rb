# ext.rb: an example external handler written exactly as for Ernie; bertd runs it unchanged
# (`ruby -I modules/ruby/lib examples/ext.rb`, or RUBYLIB=modules/ruby/lib). It must never print
# to stdout: a handler's stdout is its own, the protocol is on fds 3 and 4.
require 'rubygems'
require 'ernie'

module Ext
  # ext:add(1, 2) -> 3
  def add(a, b)
    a + b
  end

  # ext:fail(Message) raises, so the client gets {error, {user, 0, <<"RuntimeError">>, Message, Trace}}.
  def fail(message)
    raise message
  end

  # ext:slow(Ms) sleeps Ms milliseconds and answers Ms: for timeouts and queueing.
  def slow(ms)
    sleep(ms / 1000.0)
    ms
  end

  # ext:echo(X) -> X: shows which Ruby type each BERT type arrives as.
  def echo(x)
    x
  end

  # ext:types(X) -> the Ruby class names of X and, for a tuple or list, of its elements.
  def types(x)
    kids = x.is_a?(Array) ? x.map { |e| e.class.name } : []
    [x.class.name, kids]
  end

  private

  # Not a function: private methods of an exposed module stay private.
  def helper
    :secret
  end
end

Ernie.expose(:ext, Ext)

# Ernie's older DSL works too.
Ernie.mod(:calc) do
  fun(:mul) do |a, b|
    a * b
  end
end
