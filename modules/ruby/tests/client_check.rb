# client_check.rb: drives bertd's Ruby client against test_ruby.py's fake BERP server and prints one JSON
# object of what happened, for the Python test to judge. It asserts nothing itself and never retries.
# Usage: ruby -I modules/ruby/lib client_check.rb PORT CLOSED_PORT
require 'json'
require 'bertd/client'
require 'bertrpc'

port = Integer(ARGV.fetch(0))
closed_port = Integer(ARGV.fetch(1))
host = '127.0.0.1'
out = {}

# What an exception looked like, in JSON terms.
def described(exc)
  d = { 'class' => exc.class.name, 'message' => exc.message, 'ancestors' => exc.class.ancestors.map(&:to_s) }
  if exc.is_a?(BERTD::RPCError)
    d.merge!('type' => exc.type.to_s, 'code' => exc.code, 'remote_class' => exc.remote_class,
             'remote_backtrace' => exc.remote_backtrace, 'original' => exc.original_exception.message,
             'original_backtrace' => exc.original_exception.backtrace)
  end
  d
end

def outcome
  { 'value' => yield }
rescue StandardError => e
  { 'error' => described(e) }
end

svc = BERTD::Service.new(host, port, timeout: 2)
out['add'] = outcome { svc.call.ext.add(1, 2) }
out['cast'] = outcome { svc.cast.ext.add(5, 6) }
out['low'] = outcome { svc.call(priority: :low).ext.add(2, 3) }
out['explicit'] = outcome { svc.request(:call, :ext, :add, [7, 8], priority: :high) }
sample = ['héllo'.b, 1.5, 0.1 + 0.2, 1 << 40, -(1 << 31), { 'k' => [:a, nil, true] }, BERT::Tuple[:x, []]]
out['echo_equal'] = outcome { sample.map { |x| svc.call.ext.echo(x) == x } }
out['echo_tuple_class'] = outcome { svc.call.ext.echo(BERT::Tuple[1, 2]).class.name }
out['float_ernie'] = outcome { svc.call.ext.echo(2.5) }
new_floats = BERTD::Service.new(host, port, timeout: 2, float_format: :new)
out['float_new'] = outcome { new_floats.call.ext.echo(0.75) }
out['float_bad'] = outcome { BERTD::Service.new(host, port, float_format: :old) }
out['user'] = outcome { svc.call.ext.fail('boom') }
out['server_module'] = outcome { svc.call.failboat.add(1, 2) }
out['server_function'] = outcome { svc.call.ext.mcfail }
out['protocol'] = outcome { svc.call.ext.protocol }
out['proxy'] = outcome { svc.call.ext.proxy }
out['garbage'] = outcome { svc.call.ext.garbage }
out['closed'] = outcome { svc.call.ext.close }
out['bad_option'] = outcome { svc.call(priority: :urgent).ext.add(1, 2) }
out['unencodable'] = outcome { svc.call.ext.add(Object.new, 1) }
out['refused'] = outcome { BERTD::Service.new(host, closed_port, timeout: 2).call.ext.add(1, 2) }
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
out['timeout'] = outcome { BERTD::Service.new(host, port, timeout: 0.3).call.ext.slow(10_000) }
out['timeout_seconds'] = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started

kept = BERTD::Service.new(host, port, timeout: 2, persistent: true)
out['persistent'] = outcome { [1, 2, 3].map { |i| kept.call.ext.add(100, i) } }
out['persistent_after_error'] = outcome do
  begin
    kept.call.ext.fail('x')
  rescue BERTD::UserError
    nil
  end
  kept.call.ext.add(200, 1)
end
kept.close

compat = BERTRPC::Service.new(host, port)
out['compat_add'] = outcome { compat.call.ext.add(1, 3) }
out['compat_cache'] = outcome { compat.call(cache: [:validation, 'tok']).ext.add(300, 1) }
out['compat_cache_hash'] = outcome { compat.call({ cache: [:validation, 'tok2'] }).ext.add(300, 2) }
out['compat_user'] = outcome do
  compat.call.ext.fail('boom')
rescue BERTRPC::UserError => e
  "rescued #{e.class.name} as BERTRPC::UserError: #{e.message}"
end
out['compat_server'] = outcome do
  compat.call.failboat.add(1, 2)
rescue BERTRPC::ServerError => e
  "rescued as BERTRPC::ServerError: #{e.message}"
end
out['compat_timeout'] = outcome do
  BERTRPC::Service.new(host, port, 0.3).call.ext.slow(10_000)
rescue BERTRPC::ReadTimeoutError => e
  "rescued as BERTRPC::ReadTimeoutError: #{e.message}"
end
out['compat_base'] = outcome do
  compat.call.ext.protocol
rescue BERTRPC::BERTRPCError => e
  "rescued as BERTRPC::BERTRPCError: #{e.class.name}"
end

puts JSON.generate(out)
