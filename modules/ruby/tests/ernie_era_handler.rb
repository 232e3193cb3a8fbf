# ernie_era_handler.rb: an external handler as Ernie's own Ruby library ran one (ernie 2.x): BERPs on
# fds 3 and 4 through Debian's ruby-bert alone, nothing of bertd's. Like Ernie's loop, it decodes each
# request outside any rescue, so a request ruby-bert cannot read (a NEW_FLOAT, tag 70) kills the worker.
# Module `old` (or the name given as its argument): echo(X), half(X), sum(A, B), kind(X) (the Ruby
# class of X).
require 'bert'

abort('ernie_era_handler.rb must run on ruby-bert alone') if defined?(BERTD)

MODULE = (ARGV[0] || 'old').to_sym

FUNCTIONS = {
  echo: ->(x) { x },
  half: ->(x) { x / 2.0 },
  sum: ->(a, b) { a + b },
  kind: ->(x) { x.class.name }
}.freeze

def answer(request)
  kind, mod, fun, args = request
  return t[:error, t[:server, 1, 'ServerError', "No such module '#{mod}'", []]] unless mod == MODULE

  body = FUNCTIONS[fun]
  return t[:error, t[:server, 2, 'ServerError', "No such function '#{mod}:#{fun}'", []]] unless body

  result = body.call(*args)
  kind == :cast ? t[:noreply] : t[:reply, result]
rescue StandardError => e
  t[:error, t[:user, 0, e.class.name, e.message, e.backtrace || []]]
end

input = IO.new(3, 'rb')
output = IO.new(4, 'wb')
output.sync = true
while (header = input.read(4))
  request = BERT.decode(input.read(header.unpack1('N'))) # raises on tag 70: the worker dies, as in Ernie
  next if request[0] == :info

  body = BERT.encode(answer(request))
  output.write([body.bytesize].pack('N') + body)
end
