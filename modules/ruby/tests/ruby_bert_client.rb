# ruby_bert_client.rb: an Ernie-era BERT-RPC client, as the bertrpc gem works: Debian's ruby-bert (and
# nothing of bertd's) encodes and decodes, one TCP connection per request. test_ruby_bert.py uses it to
# show what such a client reads from bertd. Usage: ruby ruby_bert_client.rb PORT CALLS_JSON, CALLS_JSON
# a list of [module, function, args]; prints one JSON line per call: {"value": V}, {"error": [type,
# code, class, message]} or {"raised": "Class: message"}. It never retries.
require 'bert'
require 'json'
require 'socket'

abort('ruby_bert_client.rb must run on ruby-bert alone') if defined?(BERTD)

def read_exactly(sock, size)
  data = sock.read(size)
  raise "connection closed (#{data.to_s.bytesize} of #{size} bytes)" if data.nil? || data.bytesize < size

  data
end

def call(port, mod, fun, args)
  TCPSocket.open('127.0.0.1', port) do |sock|
    body = BERT.encode(t[:call, mod.to_sym, fun.to_sym, args])
    sock.write([body.bytesize].pack('N') + body)
    answer = BERT.decode(read_exactly(sock, read_exactly(sock, 4).unpack1('N')))
    case answer[0]
    when :reply then { 'value' => answer[1] }
    when :error then { 'error' => answer[1].first(4).map { |x| x.is_a?(Symbol) ? x.to_s : x } }
    else { 'raised' => "unexpected answer #{answer.inspect}" }
    end
  end
rescue StandardError => e
  { 'raised' => "#{e.class}: #{e.message}" }
end

port = Integer(ARGV.fetch(0))
JSON.parse(ARGV.fetch(1)).each { |mod, fun, args| puts JSON.generate(call(port, mod, fun, args)) }
